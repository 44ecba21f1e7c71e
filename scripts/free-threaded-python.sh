#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (python3.13t, no GIL) for `make test-free-threaded`,
# where the daemon's workers are threads of one process: from Debian's source of python3.13
# (trixie's, the first Debian release with 3.13), into FT_PREFIX (default
# /var/cache/mcached/python3.13t), outside the repository. Prints the interpreter's path.
# Idempotent: nothing is fetched or built when it is there. About 5 minutes on 2 cores.
# apt reads trixie's source index from a directory of this script's own: the system's
# sources and lists are left alone.
set -euo pipefail

PREFIX="${FT_PREFIX:-/var/cache/mcached/python3.13t}"
PY="$PREFIX/bin/python3.13t"
if [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys._is_gil_enabled())' 2>/dev/null; then
    echo "$PY"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in gcc make xz-utils libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from Debian's packages" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/python3.13t.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/parts" "$tmp/lists/partial"
cat >"$tmp/parts/trixie.sources" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(
    -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$tmp/parts"
    -o Dir::State::Lists="$tmp/lists" -o APT::Sandbox::User=root
)
echo "fetching Debian's python3.13 source" >&2
$SUDO apt-get "${apt_opts[@]}" update -qq
(cd "$tmp" && $SUDO apt-get "${apt_opts[@]}" source --download-only -qq python3.13 >/dev/null)
tar -C "$tmp" -xf "$tmp"/python3.13_*.orig.tar.xz
src="$(find "$tmp" -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)"
echo "building $(basename "$src") without the GIL into $PREFIX" >&2
(
    cd "$src"
    ./configure -q --disable-gil --prefix="$PREFIX" --with-ensurepip=install >/dev/null
    make -s -j"$(nproc)" >/dev/null 2>&1
    $SUDO make -s install >/dev/null 2>&1
)
"$PY" -c 'import sys; sys.exit(sys._is_gil_enabled())'
echo "$PY"
