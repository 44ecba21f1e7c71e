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

from typing import Any, NamedTuple

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


class ListenSpec(NamedTuple):
    """An ``-l`` entry read (`split_listen`): memcached 1.6's optional prefixes, in its order
    (``notls:``, ``proto[<name>]:``, ``tag[<name>]:``), then the address."""

    address: str  # host, host:port, [v6], [v6]:port
    plain: bool = False  # notls: a plain listener beside TLS ones
    protocol: str = ""  # proto[...]: "ascii", "binary" or "negotiating"; "": the daemon's (-B)
    tag: str = ""  # tag[...]: 1 to 8 characters (a name memcached's proxy routes by)

    def at(self, address: str) -> str:
        """This entry's prefixes before another address (`split_listen`'s inverse)."""
        return (
            (NOTLS if self.plain else "")
            + (f"proto[{self.protocol}]:" if self.protocol else "")
            + (f"tag[{self.tag}]:" if self.tag else "")
            + address
        )


#: a listening socket no -l entry names (-s, sockets systemd passes): no prefix
NO_PREFIX = ListenSpec("")

#: the names ``proto[...]`` takes, in the order memcached compares them: a name that begins
#: one of them is that one (its strncmp over the name's length); another name changes nothing
LISTEN_PROTOCOLS = ("ascii", "binary", "negotiating")


def _bracketed(text: str, what: str) -> tuple[str, str]:
    """``[name]:rest`` -> (name, rest): memcached skips the one character after ``]``, an
    assumed ``:``. ValueError in memcached's words when the ``]`` is missing."""
    name, sep, rest = text[1:].partition("]")
    if not sep:
        raise ValueError(f'{what}: "{clip(text)}"')
    return name, rest[1:]


def split_listen(spec: str) -> ListenSpec:
    """An ``-l`` entry -> its prefixes and address, as memcached 1.6.18 reads them
    (``server_sockets``). ValueError, in memcached's words, on a prefix it refuses: a
    missing ``]``, a tag not of 1 to 8 characters, ``proto[proxy]`` (memcached's proxy,
    which a build without it refuses, as Debian's does)."""
    plain = spec.startswith(NOTLS)
    if plain:
        spec = spec[len(NOTLS) :]
    protocol = ""
    if spec.startswith("proto["):
        name, spec = _bracketed(spec[5:], "Invalid protocol spec")
        protocol = next((p for p in LISTEN_PROTOCOLS if p.startswith(name)), "")
        if not protocol and "proxy".startswith(name):
            raise ValueError(f'Server not built with proxy: "proto[{clip(name)}"')
    tag = ""
    if spec.startswith("tag["):
        tag, spec = _bracketed(spec[3:], "Invalid tag in socket config")
        if not 1 <= len(tag) <= 8:
            raise ValueError(f'Listener tags must be between 1 and 8 characters: "{clip(tag)}"')
    return ListenSpec(spec, plain, protocol, tag)


def parse_listen(spec: str, default_port: int) -> tuple[str, int]:
    """An ``-l`` address -> (host, port) to bind: ``host``, ``host:port``, ``[v6]``,
    ``[v6]:port``, after memcached's prefixes (`split_listen`). An empty host is the
    wildcard; port 0 picks a free port. ValueError on a malformed address or prefix."""
    host, port = split_host_port(split_listen(spec).address)
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
