"""Who should read which stream: rendezvous hashing with bounded loads (pure functions).

Every instance computes the same answer from the same inputs (the running streams and
the live ingest-capable instances), so no instance has to coordinate the assignment;
leases (``tps.cluster.ownership``) only make sure a stream is never read twice while
views differ for a moment.

Plain rendezvous (highest random weight) hashing moves the fewest streams when an
instance comes or goes - only the streams it takes or had - but with a dozen feeds
and three instances it easily gives one instance seven and another two. TPS adds a
load bound: streams are placed one by one, in a fixed order (by hash of the name), each
on its highest-ranked instance that is not yet full (the loads are
``floor(streams / instances)`` or one more).
That keeps every instance within one stream of every other, and the cost in movement
is small: over 100 random sets of names, removing one of three instances moved its own
streams plus on average 0.5 others of 12 (at most 2) and 2 of 200 (at most 8); adding a
fourth moved its fair share plus on average 0.8 of 12 and 3.6 of 200
(tests/cluster/test_assign.py pins the bounds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(instance: str, stream: str) -> int:
    digest = hashlib.blake2b(f"{instance}\0{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _order_key(stream: str) -> bytes:
    return hashlib.blake2b(stream.encode(), digest_size=8).digest()


def ranking(stream: str, instances: Iterable[str]) -> list[str]:
    """``instances`` from the one that most wants ``stream`` to the least (rendezvous)."""
    return sorted(set(instances), key=lambda instance: (-_weight(instance, stream), instance))


def assign(streams: Iterable[str], instances: Iterable[str]) -> dict[str, str]:
    """stream -> instance for every stream; empty when there is no instance.

    Deterministic and independent of the input order; loads differ by at most one.
    """
    members = sorted(set(instances))
    names = sorted(set(streams), key=lambda name: (_order_key(name), name))
    if not members or not names:
        return {}
    low, extra = divmod(len(names), len(members))
    # ``extra`` instances may hold one more than ``low``: loads are low or low + 1.
    load = dict.fromkeys(members, 0)
    result: dict[str, str] = {}
    for name in names:
        for instance in ranking(name, members):
            if load[instance] < low or (load[instance] == low and extra > 0):
                if load[instance] == low:
                    extra -= 1
                result[name] = instance
                load[instance] += 1
                break
    return result
