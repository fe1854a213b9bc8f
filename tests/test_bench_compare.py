"""`estafeta bench compare`: the ratios it prints, and one short run beside a private Postfix instance
when Debian's postfix is installed (the run needs root; `apt-get install postfix`). The figures themselves
are for `estafeta bench compare`, never asserted here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estafeta.bench.compare import _row, add_ratios
from estafeta.bench.postfix import main_cf, missing_tools
from estafeta.cli import app


def test_pipeline_is_set_against_relaying_and_the_relay_against_accepting() -> None:
    runs = {
        "smtp-sink (limit)": {"accept_msgs_per_s": 3000.0},
        "postfix": {"accept_msgs_per_s": 400.0, "relayed_msgs_per_s": 350.0, "cpu_ms_per_msg": 2.0},
        "pipeline sqlite": {"accept_msgs_per_s": 900.0, "relayed_msgs_per_s": 175.0, "cpu_ms_per_msg": 8.0},
        "relay sqlite": {"accept_msgs_per_s": 200.0, "relayed_msgs_per_s": 150.0, "cpu_ms_per_msg": 5.0},
    }
    add_ratios(runs)
    assert runs["pipeline sqlite"]["rate_vs_postfix"] == 0.5
    assert runs["pipeline sqlite"]["cpu_vs_postfix"] == 4.0
    assert runs["relay sqlite"]["rate_vs_postfix"] == 0.5
    assert runs["relay sqlite"]["cpu_vs_postfix"] == 2.5
    assert "rate_vs_postfix" not in runs["smtp-sink (limit)"]


def test_a_postgresql_run_counts_the_database_servers_cpu_against_postfixs() -> None:
    relay = {"msgs_per_s": 450.0, "relayed_msgs_per_s": 440.0, "received_by_sink": 100, "messages": 100}
    on_sqlite = _row({**relay, "cpu_ms_per_msg": 2.0, "loadavg": "1.0"}, "msgs_per_s", "relayed_msgs_per_s")
    on_postgresql = _row(
        {**relay, "cpu_ms_per_msg": 2.0, "database_cpu_ms_per_msg": 0.45, "loadavg": "1.0"},
        "msgs_per_s",
        "relayed_msgs_per_s",
    )
    assert on_sqlite["cpu_ms_per_msg"] == 2.0
    assert on_postgresql["cpu_ms_per_msg"] == 2.45


def test_the_private_postfix_relays_only_to_the_sink_and_listens_only_on_loopback(tmp_path: Path) -> None:
    config = main_cf(tmp_path, 2600)
    assert "relayhost = [127.0.0.1]:2600" in config
    assert "inet_interfaces = 127.0.0.1" in config
    assert f"queue_directory = {tmp_path / 'queue'}" in config


NO_POSTFIX = missing_tools()


@pytest.mark.skipif(
    bool(NO_POSTFIX) or os.geteuid() != 0,
    reason=f"needs Debian's postfix (missing: {', '.join(NO_POSTFIX) or 'none'}) and root",
)
def test_a_short_comparison_runs_postfix_and_estafeta_to_the_same_sink(tmp_path: Path) -> None:
    output = tmp_path / "compare.json"
    result = CliRunner().invoke(
        app, ["bench", "compare", "-n", "100", "--backend", "sqlite", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(output.read_text())["result"]
    cores = os.cpu_count() or 1
    estafeta = ["pipeline sqlite", "relay sqlite"]  # one front process, and one per core
    estafeta += [f"{name} {cores} processes" for name in estafeta] if cores > 1 else []
    assert set(runs) == {"smtp-sink (limit)", "postfix", *estafeta}
    assert runs["postfix"]["relayed"] == 100
    assert all(runs[name]["relayed"] == 100 for name in estafeta)
    assert runs["pipeline sqlite"]["rate_vs_postfix"] > 0 and runs["relay sqlite"]["cpu_vs_postfix"] > 0
