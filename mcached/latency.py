"""Request latency: fixed-bucket histograms per command, kept in plain ints on the request path.

What is measured: for each command a worker serves, the time from the moment the bytes of
its request began arriving (the loop clock when the read that brought them returned) to the
moment its reply was handed to the kernel (after the ``send`` of its turn). Commands answered
in one turn share that turn's end; a pipelined request is timed from the read that brought
the first bytes of its turn, so queueing behind the requests before it counts, as a client
sees it. memcached keeps no latency figures; this is mcached's own.

How: each worker keeps one row of `ROW` ints per verb (`Latency.rows`): a count per bucket
and the sum of the durations, all in integer nanoseconds. A duration of ``d`` ns falls in
bucket ``d.bit_length()``: bucket k holds [2^(k-1), 2^k) ns, so each bucket is twice as
wide as the one before, from 1 ns to 2^63. Recording a turn of requests is one clock read
(``time.monotonic_ns``), one subtraction, one ``bit_length`` and two increments per verb, with
no float, no lock and no object made: the cheapest form measured (callgrind: a ``bisect`` of
a float over fixed bounds and its conversion to nanoseconds cost twice as much; see the
README, "Monitoring"). The rows are published on the board with the other counters
(flattened by `flat`) and summed over workers, so totals are exact and survive a worker's
death like every counter.

Percentiles are read within a bucket by linear interpolation (so within 2x, usually much
closer); Prometheus is shown the bounds from 1.024 us (2^10 ns) to 17.2 s (2^34 ns), every
power of two (`EXPOSED`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

NBUCKETS = 64  # bucket k: [2^(k-1), 2^k) ns; bucket 0: 0 ns
ROW = NBUCKETS + 1  # the counts, then the sum in nanoseconds
SUM = NBUCKETS  # index of the sum in a row

#: the bounds Prometheus is shown, in seconds: the upper bound of bucket k is 2^k ns
EXPOSED_BUCKETS = tuple(range(10, 35))
EXPOSED: tuple[float, ...] = tuple(2**k / 1e9 for k in EXPOSED_BUCKETS)

#: the percentiles ``stats latency`` reports
PERCENTILES = ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p999"))


def verb_names(verbs: Iterable[bytes]) -> list[str]:
    """The histogram's names for command verbs: sorted, once each; an empty verb (a line the
    parser refused) is ``invalid``."""
    return sorted({(v.decode() if v else "invalid") for v in verbs})


class Latency:
    """One worker's histograms. `index` maps a command type to its row; `rows` are the
    rows in `names` order (the same layout in every worker: the names come from the
    dispatch table, which every worker shares)."""

    __slots__ = ("names", "rows", "index")

    def __init__(self, kinds: Iterable[type]) -> None:
        kinds = list(kinds)
        self.names = verb_names(getattr(k, "verb", b"") for k in kinds)
        self.rows = [[0] * ROW for _ in self.names]
        by_name = dict(zip(self.names, self.rows, strict=True))
        # command type -> its verb's row: the request path increments rows[type][bucket]
        self.index: dict[type, list[int]] = {
            k: by_name[(getattr(k, "verb", b"") or b"invalid").decode()] for k in kinds
        }

    @property
    def size(self) -> int:
        """Words `flat` fills (the board's vector for it)."""
        return len(self.rows) * ROW

    def flat(self) -> list[int]:
        out: list[int] = []
        for row in self.rows:
            out.extend(row)
        return out

    def reset(self) -> None:
        for row in self.rows:
            row[:] = [0] * ROW


def split(names: Sequence[str], flat: Sequence[int]) -> dict[str, list[int]]:
    """A summed vector back into one row per verb name."""
    return {name: list(flat[k * ROW : (k + 1) * ROW]) for k, name in enumerate(names)}


def count(row: Sequence[int]) -> int:
    return sum(row[:NBUCKETS])


def percentile(row: Sequence[int], pct: float) -> float:
    """The `pct` percentile of a row, in seconds: linear within the bucket it falls in."""
    n = count(row)
    if not n:
        return 0.0
    rank = pct / 100.0 * n
    seen = 0
    for k in range(NBUCKETS):
        c = row[k]
        if c and seen + c >= rank:
            lo = float(1 << (k - 1)) if k else 0.0
            hi = float(1 << k)
            return (lo + (hi - lo) * max(0.0, rank - seen) / c) / 1e9
        seen += c
    return float(1 << (NBUCKETS - 1)) / 1e9


def cumulative(row: Sequence[int]) -> list[tuple[float, int]]:
    """Prometheus buckets: (le, how many took less than le) at each `EXPOSED` bound (bucket
    k's durations are below 2^k ns), then +Inf."""
    out = []
    running = sum(row[: EXPOSED_BUCKETS[0]])
    for k, bound in zip(EXPOSED_BUCKETS, EXPOSED, strict=True):
        running += row[k]
        out.append((bound, running))
    out.append((float("inf"), count(row)))
    return out


def stats_rows(rows: dict[str, list[int]]) -> list[tuple[str, object]]:
    """``stats latency``: per verb served since start (or ``stats reset``): how many, the
    mean and the percentiles, in microseconds."""
    out: list[tuple[str, object]] = []
    for name, row in sorted(rows.items()):
        n = count(row)
        if not n:
            continue
        out.append((f"{name}:count", n))
        out.append((f"{name}:mean_us", round(row[SUM] / n / 1000)))
        for pct, label in PERCENTILES:
            out.append((f"{name}:{label}_us", round(percentile(row, pct) * 1e6)))
    return out
