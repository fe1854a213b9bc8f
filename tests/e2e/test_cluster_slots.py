"""Two `estafeta serve` nodes share a destination that allows one connection, and take turns with it:

- a node whose session has nothing left to send gives the connection up as soon as the other node waits
  for it, long before its idle time (`delivery.idle_timeout`, ten minutes here) runs out;
- a node that still has mail gives it up after its turn (`delivery.give_way_after`) while the other waits,
  so that both deliver as they go rather than one after the other.

Every message arrives once, and the destination never sees two connections at once (an open idle
connection still counts). Real nodes, PostgreSQL, Redis and the simulated world, as in `test_cluster.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
IDLE_TIMEOUT = 600.0  # an idle session kept its slot this long: the tests' bounds are far shorter
TURN = 0.5  # seconds a busy connection sends before it gives way to a waiting node


@contextmanager
def _one_connection_cluster(
    world: World,
    pg_server: str,
    redis_server: str,
    directory: Path,
    rate: float,
    per_node: int,
    **delivery: object,
) -> Iterator[Cluster]:
    """Two nodes, metered.test allowing one connection at `rate` messages a second; each node holds
    `per_node` of its entries at a time and claims more as it sends them, so both have mail for it."""
    settings = {
        "idle_timeout": IDLE_TIMEOUT,
        "batch_size": per_node,
        "max_in_flight_per_domain": per_node,
        "domain_limits": {"metered.test": {"concurrency": 1, "rate": rate}},
        **delivery,
    }
    with running_cluster(world, pg_server, redis_server, directory, NODES, settings) as nodes:
        yield nodes


@pytest.fixture  # ended before the next test, whose count of open connections it would spoil
def cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Slow enough for both nodes to claim some of the mail."""
    directory = tmp_path_factory.mktemp("cluster-slots")
    with _one_connection_cluster(world, pg_server, redis_server, directory, rate=5.0, per_node=2) as nodes:
        yield nodes


@pytest.fixture
def turns_cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """About five messages a turn."""
    directory = tmp_path_factory.mktemp("cluster-turns")
    with _one_connection_cluster(
        world, pg_server, redis_server, directory, rate=10.0, per_node=4, give_way_after=TURN
    ) as nodes:
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


def test_busy_nodes_take_turns_with_a_destinations_one_connection(turns_cluster: Cluster) -> None:
    cluster, messages = turns_cluster, 80
    before = [node.delivered() for node in cluster.nodes]
    recipients = _recipients("turn", "metered.test", messages)
    _queue_across(cluster, recipients)
    samples: list[list[int]] = []  # deliveries per node since the mail was queued, over time
    deadline = time.monotonic() + IDLE_TIMEOUT / 5
    while len(_delivered_to(cluster.world, recipients)) < messages:
        assert time.monotonic() < deadline, "timed out waiting for every message delivered"
        samples.append([node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)])
        time.sleep(0.1)
    time.sleep(1)  # a second copy, were there one, would come now
    assert set(_delivered_to(cluster.world, recipients).values()) == {1}
    made = [node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)]
    assert sum(made) == messages
    # Without turns, the node that got the connection first would send all but the other's few claimed
    # entries, and those would go last.
    halfway = next(counts for counts in samples if sum(counts) >= messages // 2)
    assert min(halfway) >= messages // 12, f"by half the mail, one node had sent almost none: {halfway}"
    assert min(made) >= messages // 4, f"one node sent most of the mail: {made}"
    assert cluster.world.ledger().most_sessions("metered.test") == 1
