from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from catalog.recommendations import Recommendations

USERS = range(60)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()


def sets(node: Any) -> int:
    return int(node.stats()["cmd_set"])


def test_recommendations_are_spread_over_every_node(
    recommendations: Recommendations, mcached_cluster: Any
) -> None:
    nodes = mcached_cluster.nodes
    before = [sets(n) for n in nodes]
    for user in USERS:
        recommendations.remember(user, ["book", "lamp"])
    assert all(recommendations.recall(user) == ["book", "lamp"] for user in USERS)
    assert all(sets(n) > b for n, b in zip(nodes, before, strict=True))


def test_a_crashed_node_costs_only_its_share(
    recommendations: Recommendations, mcached_cluster: Any
) -> None:
    for user in USERS:
        recommendations.remember(user, ["tea"])
    mcached_cluster.kill(1)
    recalled = [recommendations.recall(user) for user in USERS]  # misses, never an error
    kept = [r for r in recalled if r is not None]
    assert 0 < len(kept) < len(USERS) and all(r == ["tea"] for r in kept)


def test_scale_out_is_followed_without_a_restart(
    recommendations: Recommendations, mcached_cluster: Any
) -> None:
    new = mcached_cluster.add_node()
    assert eventually(lambda: new.address in recommendations.nodes)
    before = sets(new)
    for user in USERS:
        recommendations.remember(user, ["pen"])
    # recalled first: the sets go without waiting for a reply (pymemcache's noreply), and a
    # node serves a connection's requests in order, so once every get is answered every set
    # has been served and counted; `stats` on a connection of its own may come before them
    assert all(recommendations.recall(user) == ["pen"] for user in USERS)
    assert sets(new) > before


def test_the_client_uses_every_node_listed(
    recommendations: Recommendations, mcached_cluster: Any
) -> None:
    assert recommendations.nodes == sorted(n.address for n in mcached_cluster.nodes)
