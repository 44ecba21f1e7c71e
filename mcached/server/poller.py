"""epoll with an fd -> object table: what ``selectors.EpollSelector`` does, minus its
per-event bookkeeping.

The worker loop wakes once per batch of ready sockets and the selectors module builds a
``SelectorKey`` lookup and a tuple for every event; on the hot path that was measurable, so
the loop polls epoll itself and finds each socket's owner in one dict lookup (see
`Worker.run`). Linux only, as the daemon is.
"""

from __future__ import annotations

import select
import socket
from typing import Any

READ = select.EPOLLIN
WRITE = select.EPOLLOUT
# a socket in error or hung up is reported as both readable and writable, as selectors does
READ_READY = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
WRITE_READY = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP


class Poller:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self.owners: dict[int, Any] = {}

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        self._epoll.register(fd, events)
        self.owners[fd] = owner

    def modify(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        self._epoll.modify(fd, events)
        self.owners[fd] = owner

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        owner = self.owners.pop(fd, None)
        if owner is None:
            raise KeyError(fd)
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # already closed elsewhere: the kernel dropped it

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Ready (fd, events) pairs; `timeout` None waits for ever."""
        return self._epoll.poll(-1 if timeout is None else timeout, max(len(self.owners), 1))

    def close(self) -> None:
        self._epoll.close()
        self.owners.clear()
