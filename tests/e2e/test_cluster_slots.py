"""Two `estafeta serve` nodes share a destination that allows one connection: a node whose session to it
has nothing left to send gives the connection up as soon as the other node waits for it, long before its
idle time (`delivery.idle_timeout`, ten minutes here) runs out, and the destination never sees two
connections at once (an open idle connection still counts).

Real nodes, PostgreSQL, Redis and the simulated world, as in `test_cluster.py`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estafeta.world import World
from tests.e2e.test_cluster import (
    Cluster,
    _delivered_to,
    _queue_across,
    _recipients,
    _until,
    running_cluster,
)

NODES = 2
IDLE_TIMEOUT = 600.0  # an idle session kept its slot this long: the test's bounds are far shorter
ONE_CONNECTION = {"concurrency": 1, "rate": 5.0}  # slow enough for both nodes to claim some of the mail


@pytest.fixture(scope="module")
def cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    delivery = {
        "idle_timeout": IDLE_TIMEOUT,
        # Each node holds two of the destination's entries at a time, so both nodes have some to send.
        "batch_size": 2,
        "max_in_flight_per_domain": 2,
        "domain_limits": {"metered.test": ONE_CONNECTION},
    }
    directory = tmp_path_factory.mktemp("cluster-slots")
    with running_cluster(world, pg_server, redis_server, directory, NODES, delivery) as nodes:
        yield nodes


def test_an_idle_session_gives_its_connection_to_a_node_waiting_for_it(cluster: Cluster) -> None:
    before = [node.delivered() for node in cluster.nodes]
    recipients = _recipients("slot", "metered.test", 20)
    _queue_across(cluster, recipients)
    # Without giving way, the mail of the node that did not get the one connection first would wait
    # for the other's idle session to time out.
    _until(
        lambda: len(_delivered_to(cluster.world, recipients)) == len(recipients),
        IDLE_TIMEOUT / 5,
        "every message delivered",
    )
    assert set(_delivered_to(cluster.world, recipients).values()) == {1}
    made = [node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)]
    assert sum(made) == len(recipients)
    assert all(made), f"one node delivered everything: {made}"
    # The connection changed hands: one closed before the other opened, never two at once.
    assert cluster.world.ledger().most_sessions("metered.test") == 1
