"""Two `estafeta serve` nodes share a destination that allows one connection: a node whose session to it
has nothing left to send gives the connection up as soon as the other node waits for it, long before its
idle time (`delivery.idle_timeout`, ten minutes here) runs out, and the destination never sees two
connections at once (an open idle connection still counts).

Real nodes, PostgreSQL, Redis and the simulated world, as in `test_cluster.py`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import redis

from estafeta.bench.nodes import ServeNode as Node
from estafeta.bench.nodes import wait_until_ready
from estafeta.world import World
from tests.e2e.test_cluster import (
    START_TIMEOUT,
    Cluster,
    _account,
    _delivered_to,
    _node_env,
    _queue_across,
    _recipients,
    _until,
)

NODES = 2
IDLE_TIMEOUT = 600.0  # an idle session kept its slot this long: the test's bounds are far shorter
ONE_CONNECTION = {"concurrency": 1, "rate": 5.0}  # slow enough for both nodes to claim some of the mail


@pytest.fixture(scope="module")
def cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    schema = f"t_{secrets.token_hex(6)}"
    prefix = f"estafeta-test:{secrets.token_hex(6)}:"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    database_url = (
        pg_server.replace("postgresql://", "postgresql+psycopg://", 1) + f"?options=-csearch_path%3D{schema}"
    )
    directory = tmp_path_factory.mktemp("cluster-slots")
    world.reset()
    token = asyncio.run(_account(database_url, world))
    env = _node_env(database_url, world, prefix)
    delivery = json.loads(env["ESTAFETA_DELIVERY"])
    delivery.update(
        idle_timeout=IDLE_TIMEOUT,
        # Each node holds two of the destination's entries at a time, so both nodes have some to send.
        batch_size=2,
        max_in_flight_per_domain=2,
        domain_limits={"metered.test": ONE_CONNECTION},
    )
    env["ESTAFETA_DELIVERY"] = json.dumps(delivery)
    nodes = [Node.start(f"node{n}", env, directory) for n in range(NODES)]
    try:
        wait_until_ready(nodes, START_TIMEOUT)
        yield Cluster(nodes, token, world, schema)
    finally:
        for node in nodes:
            node.stop(timeout=30)
        shared = redis.Redis.from_url(redis_server)
        keys = list(shared.scan_iter(f"{prefix}*"))
        if keys:
            shared.delete(*keys)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


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
