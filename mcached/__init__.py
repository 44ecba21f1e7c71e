"""mcached: a memcached-compatible, multi-threaded cache daemon in pure Python.

`__version__` is the package's own release. `MEMCACHED_VERSION` is what the `version`
command answers: clients (auto-discovery ones in particular) parse a plain dotted memcached
version and pick protocol features by it, so we answer the memcached release we match.
"""

__version__ = "0.1.0"
MEMCACHED_VERSION = "1.6.18"
