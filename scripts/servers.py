"""What the scripts beside this module share: a free port, the two servers' command lines,
starting a server and waiting until it answers, its memory, and stopping it.

The scripts are run as ``python scripts/NAME.py``, which puts this directory first on
``sys.path``: they ``import servers``.
"""

from __future__ import annotations

import compileall
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent  # the checkout whose mcached is started


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (another process may take it before the server binds
    it: a start that fails is worth one more try)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def memcached_binary() -> str:
    binary = shutil.which("memcached")
    if binary is None:
        raise SystemExit("memcached is not installed (scripts/install-system-deps.sh)")
    return binary


def server_cmd(kind: str, port: int, *args: str, host: str = HOST) -> list[str]:
    """The command that starts `kind` ("memcached", or "mcached": this checkout's, on this
    interpreter) on host:port with `args`. memcached starts as root only with ``-u root``."""
    if kind == "memcached":
        cmd = [memcached_binary(), *(["-u", "root"] if os.geteuid() == 0 else [])]
    elif kind == "mcached":
        cmd = [sys.executable, "-m", "mcached"]
    else:
        raise ValueError(kind)
    return [*cmd, "-l", host, "-p", str(port), *args]


def ask_version(port: int, host: str = HOST, timeout: float = 1.0) -> str:
    """The server's answer to ``version`` (OSError if it does not answer)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") and len(reply) < 1024:
            chunk = s.recv(1024)
            if not chunk:
                break
            reply += chunk
    if not reply.startswith(b"VERSION "):
        raise ConnectionError(f"bad reply to 'version': {reply[:100]!r}")
    return reply[8:].strip().decode(errors="replace")


def wait_ready(
    proc: subprocess.Popen[bytes], port: int, host: str = HOST, timeout: float = 20.0
) -> str:
    """Wait until the server `proc` started answers ``version`` on host:port: its version.
    RuntimeError if it exits first or does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with status {proc.returncode}")
        try:
            return ask_version(port, host)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def installed_env() -> dict[str, str]:
    """The environment mcached is started in: this one, but with the package's bytecode
    compiled and used, as an installed package's is (pip compiles a wheel's modules as it
    installs it). This machine sets PYTHONDONTWRITEBYTECODE; a daemon started under it
    compiles every module of the package from source, and the compiler's freed memory stays
    in the heap its worker processes share (measured at -t 4: 50.9 against 46.4 MB of PSS
    at start, every module compiled against none)."""
    compileall.compile_dir(ROOT / "mcached", quiet=1)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def start(kind: str, *args: str, host: str = HOST) -> tuple[subprocess.Popen[bytes], int]:
    """`kind` (see `server_cmd`) started on a free port with `args`, answering: the process
    and its port. Output is discarded. SystemExit if it does not start."""
    port = free_port(host)
    cmd = server_cmd(kind, port, *args, host=host)
    env = installed_env() if kind == "mcached" else None
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(proc, port, host)
    except RuntimeError as e:
        stop(proc)
        raise SystemExit(f"{kind} did not start: {e}") from None
    return proc, port


def pss(proc: subprocess.Popen[bytes]) -> int:
    """The memory a server holds: the proportional set size (PSS) of its process and every
    child of it, summed. mcached is a supervisor and worker processes over one shared
    arena: PSS counts each shared page once across them, where summing RSS would count it
    once per process. (memcached is one process: its PSS is its RSS less shared libraries.)"""
    main = psutil.Process(proc.pid)
    total = 0
    for p in [main, *main.children(recursive=True)]:
        try:
            total += int(p.memory_full_info().pss)
        except psutil.Error:
            continue
    return total


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
