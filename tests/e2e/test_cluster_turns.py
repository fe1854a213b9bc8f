"""Two `estafeta serve` nodes both have a backlog for a destination that allows one connection: the node
holding it gives it up after its turn (`delivery.give_way_after`) while the other waits, even though it
still has mail to send, so both deliver as they go rather than one after the other; every message arrives
once and the destination never sees two connections at once.

Real nodes, PostgreSQL, Redis and the simulated world, as in `test_cluster.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from estafeta.world import World
from tests.e2e.test_cluster import Cluster, _delivered_to, _queue_across, _recipients, running_cluster

NODES = 2
MESSAGES = 80
TURN = 0.5  # seconds a busy connection sends before it gives way to a waiting node
ONE_CONNECTION = {"concurrency": 1, "rate": 10.0}  # about five messages a turn
IDLE_TIMEOUT = 600.0  # only giving way can move the connection while a node has mail


@pytest.fixture(scope="module")
def cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    delivery = {
        "idle_timeout": IDLE_TIMEOUT,
        "give_way_after": TURN,
        # Each node holds a few of the destination's entries and claims more as it sends them, so both
        # keep mail for it until the backlog is gone.
        "batch_size": 4,
        "max_in_flight_per_domain": 4,
        "domain_limits": {"metered.test": ONE_CONNECTION},
    }
    directory = tmp_path_factory.mktemp("cluster-turns")
    with running_cluster(world, pg_server, redis_server, directory, NODES, delivery) as nodes:
        yield nodes


def test_busy_nodes_take_turns_with_a_destinations_one_connection(cluster: Cluster) -> None:
    before = [node.delivered() for node in cluster.nodes]
    recipients = _recipients("turn", "metered.test", MESSAGES)
    _queue_across(cluster, recipients)
    samples: list[list[int]] = []  # deliveries per node since the mail was queued, over time
    deadline = time.monotonic() + IDLE_TIMEOUT / 5
    while len(_delivered_to(cluster.world, recipients)) < MESSAGES:
        assert time.monotonic() < deadline, "timed out waiting for every message delivered"
        samples.append([node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)])
        time.sleep(0.1)
    time.sleep(1)  # a second copy, were there one, would come now
    assert set(_delivered_to(cluster.world, recipients).values()) == {1}
    made = [node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)]
    assert sum(made) == MESSAGES
    # Without turns, the node that got the connection first would send all but the other's few claimed
    # entries, and those would go last.
    halfway = next(counts for counts in samples if sum(counts) >= MESSAGES // 2)
    assert min(halfway) >= MESSAGES // 12, f"by half the mail, one node had sent almost none: {halfway}"
    assert min(made) >= MESSAGES // 4, f"one node sent most of the mail: {made}"
    ledger = cluster.world.ledger()
    assert ledger.most_sessions("metered.test") == 1
