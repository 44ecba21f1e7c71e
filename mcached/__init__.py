"""mcached: a memcached-compatible cache daemon in pure Python that uses every core it is given.

`__version__` is the package's own release. `MEMCACHED_VERSION` is what the `version`
command answers: clients (auto-discovery ones in particular) parse a plain dotted memcached
version and pick protocol features by it, so we answer the memcached release we match.

`serve()` and `serve_cluster()` start servers inside the calling program (`mcached.embed`);
they are imported on first use, so ``import mcached`` stays as light as the version constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
MEMCACHED_VERSION = "1.6.18"

if TYPE_CHECKING:
    from mcached.embed import EmbeddedCluster, EmbeddedServer, serve, serve_cluster
    from mcached.settings import SettingsError

__all__ = [
    "MEMCACHED_VERSION",
    "EmbeddedCluster",
    "EmbeddedServer",
    "SettingsError",
    "__version__",
    "serve",
    "serve_cluster",
]
_EMBED = {"EmbeddedCluster", "EmbeddedServer", "serve", "serve_cluster"}


def __getattr__(name: str) -> Any:
    # what serve() raises for a bad value, with memcached's message: `except mcached.SettingsError`
    if name == "SettingsError":
        from mcached.settings import SettingsError

        return SettingsError
    if name in _EMBED:
        from mcached import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'mcached' has no attribute {name!r}")
