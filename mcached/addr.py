"""Host and port, as people write them and as the log prints them: the one grammar of
``host:port`` every part of mcached reads (``-l``, ``--cluster-dns``, cluster nodes,
``mcached-tool HOST:PORT``, the discovery client's endpoints).

The grammar: ``host:port``, ``host``, ``[v6]:port``, ``[v6]``, and a bare IPv6 address
(more than one colon and no brackets: all host, no port). `split_host_port` reads it and
nothing else; each caller then applies its own rule for what is missing (a default port) or
not allowed (a cluster node refuses a bare IPv6 address, which is ambiguous there).

Rules: pure functions over strings and tuples, no lookups and no sockets; this module
imports nothing from mcached, so every layer may use it.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PORT = 11211  # memcached's
NOTLS = "notls:"  # ``-l notls:<addr>``: a plain listener beside TLS ones (memcached's)
# characters of a bad token that an error message repeats: the token may be a whole
# ``config set cluster`` value, and one huge word must not make a huge error line
ECHO_MAX = 40


def clip(text: str) -> str:
    """`text` as an error message repeats it: its first `ECHO_MAX` characters, then ``...``."""
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX] + "..."


def split_host_port(text: str) -> tuple[str, str | None]:
    """``[v6]:port``, ``[v6]``, ``host:port``, ``host`` or a bare IPv6 address ->
    (host, port text, or None when there is none). Raises ValueError on a ``[`` without its
    ``]`` or on anything but ``:port`` after it. The host and port are not checked."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {clip(text)!r}")
        return host, (rest[1:] if rest else None)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None  # a name, or a bare IPv6 address


def _port_number(text: str) -> int:
    """The number of a port's digits (leading zeros of any length), or -1: not digits, or
    past 65535 (int() refuses more than 4,300 digits, in words of its own)."""
    digits = text.lstrip("0")
    if not text.isdigit() or len(digits) > 5:
        return -1
    port = int(digits or "0")
    return port if port < 65536 else -1


def parse_port(text: str, context: str) -> int:
    """A TCP/UDP port, 1 to 65535; ValueError naming `context` otherwise."""
    port = _port_number(text)
    if port < 1:
        raise ValueError(f"bad port in {clip(context)!r}")
    return port


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """Where to connect: ``host:port``, ``[v6]:port``, ``v6``, ``host`` -> (host, port).

    The host must not be empty and the port must be 1 to 65535; ValueError otherwise.
    """
    text = text.strip()
    host, port = split_host_port(text)
    number = default_port if port is None else _port_number(port)
    if not host or number < 1:
        raise ValueError(f"bad address {clip(text)!r}: want host:port")
    return host, number


def split_notls(spec: str) -> tuple[bool, str]:
    """``notls:<addr>`` -> (True, addr): a plain listener beside TLS ones (memcached's -l)."""
    if spec.startswith(NOTLS):
        return True, spec[len(NOTLS) :]
    return False, spec


def parse_listen(spec: str, default_port: int) -> tuple[str, int]:
    """An ``-l`` address -> (host, port) to bind: ``host``, ``host:port``, ``[v6]``,
    ``[v6]:port``, with or without ``notls:``. An empty host is the wildcard; port 0 picks
    a free port. ValueError on a malformed address."""
    host, port = split_host_port(split_notls(spec)[1])
    if port is None:
        return host, default_port
    number = _port_number(port)
    if number < 0:
        raise ValueError(f"bad port in {clip(spec)!r}")
    return host, number


def format_address(address: tuple[Any, ...] | str) -> str:
    """(host, port, ...) -> ``host:port`` or ``[v6]:port``; a non-IP address (an AF_UNIX
    path, as `socket.getpeername` gives it) as it is."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
