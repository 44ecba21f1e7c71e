"""``from mcached.cluster_client import ClusterClient``: the old home of the discovery client,
kept so that code written for it keeps working. It lives in `mcached.client.cluster`."""

from mcached.client.cluster import ClusterClient, DiscoveryError

__all__ = ["ClusterClient", "DiscoveryError"]
