"""Clients of running nodes, mcached or memcached: nothing here is part of the daemon.

* `node`: `NodeClient`, one plain-socket connection to one node (``config get|set|delete
  cluster``, ``version``, ``stats``), with no dependency beyond the standard library.
* `cluster`: `ClusterClient`, a pymemcache `HashClient` that follows a configuration
  endpoint (the ``client`` extra: ``pip install 'mcached[client]'``).
* `tool`, `tool_stats`: ``mcached-tool``: the cluster commands, and memcached-tool's own
  views (``display``, ``stats``, ``settings``, ``dump``, ``top``).

Rules: clients import the cluster's data format (`mcached.cluster.config`), its name lookups
and `mcached.addr`, never the server, the handlers or the storage; only `cluster` imports
pymemcache, so ``mcached-tool`` runs without it. This package's ``__init__`` imports nothing.
"""
