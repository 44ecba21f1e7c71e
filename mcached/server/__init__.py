"""Sockets and threads. Knows bytes, connections and commands as opaque values; never what a
verb means (it receives `handle` as a callable) and never the storage."""
