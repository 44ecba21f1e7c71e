"""What each user is recommended, kept for an hour on an ElastiCache Memcached cluster.

The application is given the cluster's configuration endpoint only; the client finds the
nodes and follows them when the cluster scales. A node that dies costs its share of the keys
(misses, not errors) until it is replaced.
"""

from __future__ import annotations

from mcached.client.cluster import ClusterClient


class Recommendations:
    def __init__(self, endpoint: str, poll_interval: float = 60.0) -> None:
        self._client = ClusterClient(
            endpoint, poll_interval=poll_interval, ignore_exc=True, connect_timeout=1, timeout=1
        )

    def remember(self, user_id: int, items: list[str]) -> None:
        self._client.set(f"recs:{user_id}", ",".join(items).encode(), expire=3600)

    def recall(self, user_id: int) -> list[str] | None:
        value = self._client.get(f"recs:{user_id}")
        return None if value is None else value.decode().split(",")

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """The nodes in use (host, port)."""
        return list(self._client.servers)

    def close(self) -> None:
        self._client.close()
