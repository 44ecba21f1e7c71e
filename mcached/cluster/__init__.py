"""The cluster: ElastiCache's auto-discovery, as this node serves it and as clients read it.

* `config`: a cluster configuration and its data format (`Node`, `ClusterConfig`,
  `parse_node`, `parse_data`, `format_data`), shared by the server and the clients.
* `sources`: where membership comes from (``--cluster-file``, ``--cluster-dns``) and the
  name lookups they need.
* `discovery`: the served endpoint (`Discovery`: ``config get|set|delete cluster``) and its
  watcher thread.

Rules: `config` is pure and imports only `mcached.addr`, so the clients (`mcached.client`)
take it without the server; `sources` adds lookups and the disk; only `discovery` knows the
daemon's settings and the protocol's commands.
"""
