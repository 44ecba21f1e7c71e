"""Exceptions that cross layers: a handler or the parser raises them, the server acts on them.

The protocol's own error lines (``ERROR``, ``CLIENT_ERROR <msg>``, ``SERVER_ERROR <msg>``:
memcached `doc/protocol.txt`, "Error strings") are replies, not exceptions: the parser and
the handlers answer them as values from `mcached.protocol.responses`, and the connection stays
open. What is left here cannot be answered with a line:

* `CloseConnection`: hang up on the client without a reply (memcached's ``conn_closing``).
* `StartWatch`: the connection becomes a ``watch`` stream (its worker takes it over).
* `BindError`: an address other than ``-l``/``-p``/``-s`` could not be listened on; it names
  that address, so the start's failure message does not point at the cache's.
* `Shutdown`: stop the daemon (the ``shutdown`` command). It derives from BaseException so
  that no ``except Exception`` swallows a stop request.

Rules: this module imports nothing, so every layer may import it.
"""


class CloseConnection(Exception):
    """Hang up on the client without a reply (garbage, HTTP, over-long line)."""

    def __init__(self, reason: str = "", notice: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # logged at -v (memcached prints "Invalid magic" and binary protocol errors there);
        # other hang-ups are logged at -vv with every closed connection
        self.notice = notice


class StartWatch(Exception):
    """``watch`` answered OK: from now on the connection streams log lines of `flags`."""

    def __init__(self, flags: int) -> None:
        super().__init__(flags)
        self.flags = flags


class BindError(OSError):
    """Listening on `where` (e.g. ``--metrics-listen 127.0.0.1:9150``) failed with `cause`."""

    def __init__(self, where: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.where = where


class Shutdown(BaseException):
    """Stop the daemon: at once (memcached's ``shutdown``: connections are closed and replies
    not yet sent are dropped), or, `graceful`, after answering what every connection has
    already sent (``shutdown graceful``, as SIGUSR1 and SIGTERM)."""

    def __init__(self, graceful: bool = False) -> None:
        super().__init__("graceful" if graceful else "immediate")
        self.graceful = graceful
