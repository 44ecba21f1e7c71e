"""Sockets and threads. Knows bytes, connections and commands as opaque values; never what a
verb means (it receives a table from command type to handler) and never the storage."""
