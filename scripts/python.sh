#!/usr/bin/env bash
# Prints the CPython that `make` and scripts/install.sh build mcached's environment from.
#
# A distribution's python3.11 first (/usr/bin: Debian builds it with profile-guided and
# link-time optimisation, into an executable without libpython), then any python3.11 on
# PATH, then python3. A build without them (pyenv's default, `./configure` without
# --enable-optimizations, libpython shared) runs mcached's request path on 1.2x to 1.5x
# the CPU, measured in-process (README, "Where it stands"). Set PYTHON to choose another.
for p in /usr/bin/python3.11 "$(command -v python3.11)"; do
    if [ -n "$p" ] && [ -x "$p" ] &&
        "$p" -c 'import ensurepip, sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        echo "$p"
        exit 0
    fi
done
command -v python3.11 || command -v python3
