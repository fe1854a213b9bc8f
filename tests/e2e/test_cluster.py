"""Three `estafeta serve` nodes on one PostgreSQL and one Redis behave as one platform: they share the
queue (every message delivered once), a destination's limits hold across them (the world's metered.test
counts sessions and messages whoever sends them), each scheduled round runs on one node, a setting changed
through one node is served by all at once, and a node killed with SIGKILL has its leased work finished by
the others within the lease time.

Each node is a real subprocess in a process group of its own; the cluster is shared by the module's tests
(the kill comes last).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from estafeta.audit import SYSTEM
from estafeta.bench.nodes import ServeNode as Node
from estafeta.bench.nodes import wait_until_ready
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.sandbox import dns_settings
from estafeta.world import World
from tests.conftest import PG_URL, REDIS_URL
from tests.factories import add_verified_domain

NODES = 3
LEASE_SECONDS = 5.0
METERED = {"concurrency": 2, "rate": 4.0}  # metered.test's limits, for the whole cluster
START_TIMEOUT = 240.0  # three Python servers starting at once on a loaded machine


@dataclass
class Cluster:
    nodes: list[Node]
    token: str
    world: World
    schema: str

    def client(self, node: Node) -> httpx.Client:
        return httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        with psycopg.connect(PG_URL, autocommit=True, options=f"-csearch_path={self.schema}") as conn:
            return conn.execute(query, args).fetchall()


def _send(client: httpx.Client, recipients: list[str], **extra: object) -> httpx.Response:
    messages = [
        {"from": "Acme <hello@acme.test>", "to": [r], "subject": "Hello", "text": "Hello there.\n", **extra}
        for r in recipients
    ]
    return client.post("/v1/messages", json={"messages": messages})


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `predicate` until true; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic()


def _node_env(database_url: str, world: World, prefix: str) -> dict[str, str]:
    values: dict[str, object] = {
        "database_url": database_url,
        **dns_settings(world.dns_address),
        "api": {"host": "127.0.0.1", "port": 0},
        "smtp": {"enabled": False},
        "delivery": {
            "smtp_port": world.smtp_port,
            "poll_interval": 0.2,
            "idle_timeout": 0.5,
            "throttle_pause": 0.05,
            "lease_seconds": LEASE_SECONDS,
            "slot_lease_seconds": 3,
            # A node claims a few of a destination's entries at a time, as it would claim a few hundred of a
            # big queue: one that polls first cannot take all of metered.test's mail while the others wait.
            "max_in_flight_per_domain": 8,
            "domain_limits": {"metered.test": METERED},
        },
        "mta_sts": {
            "allow_private_addresses": True,
            "ca_file": str(world.ca_file),
            "policy_port": world.https_port,
        },
        "tracking": {"use_api_url": True},
        "links": {"follow_redirects": False},
        "warmup": {"tiers": []},
        "webhooks": {"allow_private_addresses": True},
        "redis": {"url": REDIS_URL, "key_prefix": prefix},
        "scheduler": {"interval": 1},
        "cluster": {"cache_seconds": 600},  # only the announcements can explain a change seen at once
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESTAFETA_")}
    for key, value in values.items():
        env[f"ESTAFETA_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


async def _account(database_url: str, world: World) -> str:
    core = Core(Settings(database_url=database_url, **dns_settings(world.dns_address)))
    try:
        account = await core.accounts.create("acme", actor=SYSTEM)
        for name in ("acme.test", "ed.acme.test"):
            await add_verified_domain(core, account.id, name)  # published in the world's DNS
        return (await core.api_keys.create(account.id, "tests", actor=SYSTEM)).token
    finally:
        await core.aclose()


@contextlib.contextmanager
def running_cluster(
    world: World,
    pg_server: str,
    redis_server: str,
    directory: Path,
    count: int,
    delivery: dict[str, object] | None = None,
) -> Iterator[Cluster]:
    """`count` nodes on a scratch PostgreSQL schema and Redis prefix (both dropped afterwards), with the
    world's account, and `delivery` settings over the nodes' defaults."""
    schema = f"t_{secrets.token_hex(6)}"
    prefix = f"estafeta-test:{secrets.token_hex(6)}:"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    database_url = (
        pg_server.replace("postgresql://", "postgresql+psycopg://", 1) + f"?options=-csearch_path%3D{schema}"
    )
    world.reset()
    token = asyncio.run(_account(database_url, world))
    env = _node_env(database_url, world, prefix)
    if delivery:
        env["ESTAFETA_DELIVERY"] = json.dumps({**json.loads(env["ESTAFETA_DELIVERY"]), **delivery})
    nodes = [Node.start(f"node{n}", env, directory) for n in range(count)]
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


@pytest.fixture(scope="module")
def cluster(
    world: World, pg_server: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with running_cluster(world, pg_server, redis_server, tmp_path_factory.mktemp("cluster"), NODES) as nodes:
        yield nodes


def _recipients(tag: str, domain: str, count: int) -> list[str]:
    return [f"{tag}{n}@{domain}" for n in range(count)]


def _queue_across(cluster: Cluster, recipients: list[str]) -> None:
    """Queue one message per recipient, through each node in turn."""
    for index, node in enumerate(cluster.nodes):
        part = recipients[index :: len(cluster.nodes)]
        with cluster.client(node) as client:
            response = _send(client, part)
        assert response.status_code == 202, response.text


def _delivered_to(world: World, recipients: list[str]) -> Counter[str]:
    wanted = set(recipients)
    return Counter(r for m in world.received() for r in m.rcpt_to if r in wanted)


def test_the_queue_is_shared_and_each_message_is_delivered_once(cluster: Cluster) -> None:
    before = [node.delivered() for node in cluster.nodes]
    recipients = _recipients("shared", "yahoo.test", 90)
    _queue_across(cluster, recipients)
    _until(lambda: len(_delivered_to(cluster.world, recipients)) == 90, 60, "every message delivered")
    time.sleep(1)  # a second copy, were there one, would come now
    copies = _delivered_to(cluster.world, recipients)
    assert set(copies.values()) == {1}
    made = [node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)]
    assert sum(made) == 90
    assert sum(1 for m in made if m > 0) >= 2, f"one node delivered everything: {made}"


def test_a_destinations_limits_hold_across_the_nodes(cluster: Cluster) -> None:
    before = [node.delivered() for node in cluster.nodes]
    recipients = _recipients("metered", "metered.test", 40)
    _queue_across(cluster, recipients)
    _until(lambda: len(_delivered_to(cluster.world, recipients)) == 40, 90, "metered mail delivered")
    ledger = cluster.world.ledger()
    made = [node.delivered() - b for node, b in zip(cluster.nodes, before, strict=True)]
    assert sum(1 for m in made if m > 0) >= 2, f"one node delivered everything: {made}"
    # Three nodes would open six sessions (two each) and send three buckets' worth without shared limits.
    assert ledger.most_sessions("metered.test") <= METERED["concurrency"]
    rate, burst = METERED["rate"], max(1.0, METERED["rate"])
    for window in (2.0, 4.0):
        most = ledger.most_acknowledged("metered.test", window)
        assert most <= burst + rate * (window + 1.0), (window, most)


def test_each_scheduled_round_runs_on_one_node(cluster: Cluster) -> None:
    pattern = re.compile(r"scheduled job (\S+) runs round (\d+) on")

    def runs() -> list[tuple[str, int, str]]:
        return [
            (found.group(1), int(found.group(2)), node.name)
            for node in cluster.nodes
            for line in node.lines()
            if (found := pattern.search(line))
        ]

    _until(lambda: len({r for _, r, _ in runs()}) >= 5, 30, "five scheduler rounds")
    seen = runs()
    per_round = Counter((job, round_no) for job, round_no, _ in seen)
    assert per_round and max(per_round.values()) == 1, per_round.most_common(3)
    assert {"warmup-reviews", "retention"} <= {job for job, _, _ in seen}


def test_a_setting_changed_through_one_node_is_served_by_every_node(cluster: Cluster) -> None:
    first, *others = cluster.nodes

    def findings(node: Node) -> list[str]:
        with cluster.client(node) as client:
            response = _send(client, ["setting@yahoo.test"], **{"from": "Acme <news@ed.acme.test>"})
        assert response.status_code == 202, response.text
        return [f["rule"] for f in response.json()["messages"][0]["lint"]]

    for node in others:  # each node reads (and caches) the streams as they are: no From domain set
        assert "from-per-category" not in findings(node)
    with cluster.client(first) as client:
        changed = client.put("/v1/streams/transactional", json={"from_domain": "acme.test", "ip_pool": ""})
    assert changed.status_code == 200, changed.text
    for node in others:  # within a moment, not after the ten minutes their caches would otherwise last
        _until(lambda node=node: "from-per-category" in findings(node), 5, f"{node.name} to see the change")


def test_a_killed_nodes_leased_work_is_finished_by_the_others(cluster: Cluster) -> None:
    recipients = _recipients("kill", "metered.test", 30)
    cluster.world.reset()
    _queue_across(cluster, recipients)
    by_pid = {node.process.pid: node for node in cluster.nodes}

    def holders() -> Counter[int]:
        """How many entries each node holds a lease on (its engine's owner names its process)."""
        rows = cluster.sql(
            "SELECT lease_owner FROM deliveries WHERE lease_owner IS NOT NULL AND state = 'queued'"
        )
        return Counter(int(str(row[0]).split(":")[1]) for row in rows)

    _until(lambda: any(n >= 3 for n in holders().values()), 30, "a node to hold leases")
    victim = by_pid[holders().most_common(1)[0][0]]
    victim.stop(signal.SIGKILL, timeout=30)
    killed_at = time.monotonic()
    # What the victim held waits for its leases to run out, then goes at metered.test's shared rate.
    bound = LEASE_SECONDS + len(recipients) / METERED["rate"] + 15

    def finished() -> bool:
        states = cluster.sql("SELECT state FROM deliveries WHERE recipient = ANY(%s)", recipients)
        return len(states) == len(recipients) and {row[0] for row in states} == {"delivered"}

    _until(finished, bound, "the work finished")
    assert set(_delivered_to(cluster.world, recipients)) == set(recipients)
    ledger = cluster.world.ledger()
    may_repeat = {r for ack in ledger.in_flight(killed_at) for r in ack.recipients}
    copies = _delivered_to(cluster.world, recipients)
    assert {r for r, n in copies.items() if n > 1} <= may_repeat
    assert all(node.process.poll() is None for node in cluster.nodes if node is not victim)
