#!/usr/bin/env bash
# Installs the reference memcached and libmemcached's tools (memccapable, memcaslap) from
# Debian's packages when they are missing. The comparison tests and the benchmarks need them.
set -euo pipefail
need=()
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v memccapable >/dev/null 2>&1 || need+=(libmemcached-tools)
command -v memcaslap >/dev/null 2>&1 || need+=(libmemcached-tools)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing ${need[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged memcached as a service; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl stop memcached >/dev/null 2>&1 || true
fi
