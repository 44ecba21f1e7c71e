#!/usr/bin/env bash
# Installs mcached system-wide: a virtual environment in $PREFIX, the commands in
# /usr/local/bin, the systemd units, /etc/mcached.conf (kept if present) and a system user.
#   sudo make install            (or: sudo bash scripts/install.sh)
#   sudo systemctl enable --now mcached
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/opt/mcached}"
PYTHON="${PYTHON:-$(bash scripts/python.sh)}"
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo make install)" >&2
    exit 1
fi
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/python" -m pip install -q --upgrade pip
"$PREFIX/bin/python" -m pip install -q .
ln -sf "$PREFIX/bin/mcached" /usr/local/bin/mcached
if [ -x "$PREFIX/bin/mcached-tool" ]; then
    ln -sf "$PREFIX/bin/mcached-tool" /usr/local/bin/mcached-tool
fi
if ! id mcached >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mcached
fi
if [ ! -e /etc/mcached.conf ]; then
    install -m 0644 scripts/mcached.conf /etc/mcached.conf
fi
install -m 0644 scripts/mcached.service /etc/systemd/system/mcached.service
if [ -e scripts/mcached@.service ]; then
    install -m 0644 scripts/mcached@.service /etc/systemd/system/mcached@.service
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed: $PREFIX, /usr/local/bin/mcached, /etc/mcached.conf, mcached.service"
echo "start it with: systemctl enable --now mcached"
