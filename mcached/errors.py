"""Error types shared by every layer.

The protocol has three error lines (memcached `doc/protocol.txt`, "Error strings"):
``ERROR`` for an unknown verb, ``CLIENT_ERROR <msg>`` for bad input and
``SERVER_ERROR <msg>`` for our fault. Each has an exception here carrying its message;
`handlers` turns them into reply lines. `CloseConnection` asks the server to hang up
without a reply (memcached's ``conn_closing``), and `Shutdown` derives from
BaseException so that no ``except Exception`` swallows a stop request.
"""


class ProtocolError(Exception):
    """A request that earns an error line; the connection stays open."""

    line = b"ERROR"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def reply(self) -> bytes:
        if self.message:
            return self.line + b" " + self.message.encode() + b"\r\n"
        return self.line + b"\r\n"


class UnknownCommand(ProtocolError):
    """``ERROR``: a verb we do not know, or a known verb with the wrong token count."""

    line = b"ERROR"


class ClientError(ProtocolError):
    """``CLIENT_ERROR <msg>``: the request is malformed."""

    line = b"CLIENT_ERROR"


class ServerError(ProtocolError):
    """``SERVER_ERROR <msg>``: the request is fine but we cannot serve it."""

    line = b"SERVER_ERROR"


class CloseConnection(Exception):
    """Hang up on the client without a reply (garbage, HTTP, over-long line)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class Shutdown(BaseException):
    """Stop the daemon. `graceful` mirrors memcached's SIGUSR1 stop."""

    def __init__(self, graceful: bool = False) -> None:
        super().__init__("graceful" if graceful else "immediate")
        self.graceful = graceful
