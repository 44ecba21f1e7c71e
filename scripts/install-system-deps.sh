#!/usr/bin/env bash
# Installs what the comparison tests, memcached's own test suite and the benchmarks need, from
# Debian's packages, when it is missing:
#   - the reference memcached and libmemcached's tools (memccapable, memcaslap);
#   - perl with Test::More, which memcached's t/*.t files are written in (perl-base has neither),
#     and IO::Socket::SSL, their TLS client (SSL_TEST=1: the ssl_*.t files, and the files run
#     again over TLS);
#   - libmemcached's headers, where the tests run on a CPython pylibmc has no wheel for;
#   - Cyrus SASL's saslpasswd2 (sasl2-bin), which makes the reference memcached's user database
#     for the SASL tests, and its mechanism plugins (libsasl2-modules), which the SASL clients
#     load;
#   - memcached's source, for its test suite, fetched with `apt-get source` (dpkg-dev unpacks
#     it) into MEMCACHED_SRC_CACHE (default /var/cache/mcached/memcached-src), outside the
#     repository: tests/memcached_suite/ runs its t/*.t files against mcached. The source must
#     be the version of the installed memcached binary, so the two tell the same story.
# Idempotent and quick when everything is there: no apt call at all then.
set -euo pipefail

CACHE="${MEMCACHED_SRC_CACHE:-/var/cache/mcached/memcached-src}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
apt_updated=""
apt_update() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
}

# ---- packages ----
need=()
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v memccapable >/dev/null 2>&1 || need+=(libmemcached-tools)
command -v memcaslap >/dev/null 2>&1 || need+=(libmemcached-tools)
command -v prove >/dev/null 2>&1 || need+=(perl)
perl -MTest::More -e 1 >/dev/null 2>&1 || need+=(perl)
perl -MIO::Socket::SSL -e 1 >/dev/null 2>&1 || need+=(libio-socket-ssl-perl)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v saslpasswd2 >/dev/null 2>&1 || need+=(sasl2-bin)
ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || need+=(libsasl2-modules)
# pylibmc's wheels (libmemcached inside) stop at CPython 3.11: for a newer PYTHON (the
# Makefile's), pip builds it from source, against libmemcached's headers
if [ -n "${PYTHON:-}" ] && "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    [ -e /usr/include/libmemcached/memcached.h ] || need+=(libmemcached-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "installing ${need[*]} from Debian's packages" >&2
    apt_update
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian starts the packaged memcached as a service; the tests start their own.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl stop memcached >/dev/null 2>&1 || true
    fi
fi

# ---- memcached's source, for its test suite ----
# The upstream version of the binary the comparison tests run ("memcached 1.6.18" -> 1.6.18).
upstream="$(memcached -V | awk '{print $2}')"
src="$CACHE/memcached-$upstream"
if [ -f "$src/t/lib/MemcachedTest.pm" ] && [ -f "$src/.mcached-fetched" ]; then
    exit 0
fi

# `apt-get source` reads Sources indexes, which need a deb-src entry. Debian's images ship
# `deb` only, so add a deb-src twin of the distribution's own entries (not of third-party
# repositories, which may have no sources) in a file of our own, leaving the system's alone:
# deb822 (/etc/apt/sources.list.d/debian.sources, bookworm's default) or one-line format.
sources="$(apt-cache showsrc memcached 2>/dev/null || true)"
if [[ "$sources" != *"Package: memcached"* ]]; then
    if ! grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/; then
        for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/ubuntu.sources; do
            [ -f "$f" ] || continue
            # each enabled stanza (paragraph) whose Types has `deb`, again as `Types: deb-src`
            awk 'BEGIN { RS = "" }
                 {
                     n = split($0, line, "\n"); types = ""; enabled = 1
                     for (i = 1; i <= n; i++) {
                         if (line[i] ~ /^Types:/) types = line[i]
                         if (line[i] ~ /^Enabled:[ \t]*[Nn]o/) enabled = 0
                     }
                     if (!enabled || types !~ /[ \t]deb([ \t]|$)/) next
                     for (i = 1; i <= n; i++)
                         print (line[i] ~ /^Types:/ ? "Types: deb-src" : line[i])
                     print ""
                 }' "$f" | $SUDO tee "/etc/apt/sources.list.d/mcached-deb-src-$(basename "$f")" >/dev/null
        done
        if [ -f /etc/apt/sources.list ]; then
            sed -nE '/cdrom:/d; s/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list |
                $SUDO tee /etc/apt/sources.list.d/mcached-deb-src.list >/dev/null
        fi
    fi
    apt_updated=""
    apt_update
fi

# The installed package's own version first (1.6.18-1+deb12u1); any source of the same
# upstream release will do if the archive has moved on.
installed="$(dpkg-query -W -f='${Version}' memcached 2>/dev/null || true)"
tmp="$($SUDO mktemp -d "${TMPDIR:-/tmp}/memcached-src.XXXXXX")"
trap '$SUDO rm -rf "$tmp"' EXIT
echo "fetching memcached's source ($upstream) into $CACHE" >&2
(
    cd "$tmp"
    if [ -z "$installed" ] ||
        ! $SUDO apt-get source -qq -o APT::Sandbox::User=root "memcached=$installed" >/dev/null 2>&1; then
        $SUDO apt-get source -qq -o APT::Sandbox::User=root memcached >/dev/null
    fi
)
got="$(sed -nE 's/^m4_define\(\[VERSION_NUMBER\], \[([^]]*)\]\)/\1/p' "$tmp"/memcached-*/version.m4)"
if [ "$got" != "$upstream" ]; then
    echo "apt-get source memcached gave version '$got', but the installed memcached is" \
        "'$upstream': the suite must match the reference binary" >&2
    exit 1
fi
$SUDO mkdir -p "$CACHE"
$SUDO rm -rf "$src"
$SUDO mv "$tmp/memcached-$upstream" "$src"
echo "${installed:-$upstream}" | $SUDO tee "$src/.mcached-fetched" >/dev/null
