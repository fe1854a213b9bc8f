"""`estafeta bench pipeline --nodes 3` as a user runs it: three `estafeta serve` nodes on one PostgreSQL
schema and one Redis share the queue, so every message reaches the sink exactly once and more than one node
delivers. Rates are for the benchmark to print, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MESSAGES = 300


def test_three_nodes_share_the_queue_and_deliver_each_message_once(
    tmp_path: Path, pg_server: str, redis_server: str
) -> None:
    output = tmp_path / "pipeline.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "estafeta", "bench", "pipeline"),
            *("--messages", str(MESSAGES), "--batch", "50", "--nodes", "3", "--front-processes", "1"),
            *("--backend", "postgresql", "--postgresql-url", pg_server, "--redis-url", redis_server),
            *("--output", str(output)),
        ],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "delivered_per_node" in done.stdout
    run = json.loads(output.read_text())["result"]["postgresql"]
    assert run["nodes"] == 3
    # Every entry delivered (each by a 250 from the sink), and no more copies at the sink than entries,
    # counted after every node stopped: each message arrived exactly once.
    assert run["delivered"] == MESSAGES
    assert run["received_by_sink"] == MESSAGES
    per_node = run["delivered_per_node"]
    assert len(per_node) == 3 and sum(per_node) == MESSAGES
    assert sum(1 for n in per_node if n > 0) >= 2, f"one node delivered everything: {per_node}"
