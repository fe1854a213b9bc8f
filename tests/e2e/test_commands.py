"""The README's commands as a user runs them: `estafeta demo`, `estafeta serve`, `estafeta bench pipeline`,
`estafeta bench bounces`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from estafeta.config import Settings
from estafeta.sandbox import dns_settings
from estafeta.world import World
from tests.factories import add_sender_now

ESTAFETA = [sys.executable, "-m", "estafeta"]


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [*ESTAFETA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_to_the_end_and_reports_every_provider(tmp_path: Path) -> None:
    done = _run(["demo", "--messages", "300", "--workdir", str(tmp_path / "demo")], tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for provider in ("gmail.test", "yahoo.test", "outlook.test", "bounce.test", "greylist.test", "down.test"):
        assert provider in out
    assert "acme: 300 messages accepted, 300 reached a final state" in out
    assert "messages/s" in out and "estafeta serve" in out
    assert "/app/" in out and "operator@estafeta.test" in out  # the dashboard and its logins
    with sqlite3.connect(tmp_path / "demo" / "estafeta-demo.db") as db:
        states = dict(
            db.execute(
                "select state, count(*) from deliveries join accounts on accounts.id = account_id "
                "where accounts.name = 'acme' group by state"
            ).fetchall()
        )
        paused = db.execute(
            "select s.state, r.state from sending_standing s join accounts a on a.id = s.account_id "
            "join reviews r on r.account_id = a.id where a.name = 'bulkdeals' and s.stream = 'broadcast'"
        ).fetchall()
    assert set(states) <= {"delivered", "bounced", "suppressed"} and sum(states.values()) == 300
    # The sender of the bought list was paused and waits for an operator; the healthy one was not.
    assert paused == [("paused", "open")]
    assert "broadcast stream paused" in out and "waits for an operator" in out


def test_demo_interrupted_keeps_every_accepted_message(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen(
        [*ESTAFETA, "demo", "--messages", "20000", "--workdir", str(workdir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db_file = workdir / "estafeta-demo.db"
    deadline = time.monotonic() + 60
    accepted = 0
    while accepted < 500 and time.monotonic() < deadline:  # interrupt while mail is in flight
        time.sleep(0.2)
        if db_file.exists():
            try:
                with sqlite3.connect(db_file, timeout=5) as db:
                    accepted = db.execute("select count(*) from messages").fetchone()[0]
            except sqlite3.OperationalError:
                continue
    assert accepted >= 500
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted" in out and "estafeta serve" in out
    with sqlite3.connect(db_file) as db:
        messages = db.execute("select count(*) from messages").fetchone()[0]
        deliveries = db.execute("select count(*) from deliveries").fetchone()[0]
        leased = db.execute("select count(*) from deliveries where lease_owner is not null").fetchone()[0]
        pending = db.execute(
            "select count(*) from deliveries where state in ('queued','deferred')"
        ).fetchone()[0]
    assert messages == deliveries >= accepted  # one recipient each: nothing accepted went missing
    assert leased == 0  # what was not attempted was handed back, ready for the next start
    assert pending > 0


def test_serve_accepts_mail_and_stops_cleanly_on_sigterm(tmp_path: Path, world: World) -> None:
    db_url = f"sqlite:///{tmp_path / 'serve.db'}"
    # acme.test's records are published in the world's DNS and verified there, so its mail is accepted.
    token = add_sender_now(
        Settings(database_url=db_url, **dns_settings(world.dns_address)), "acme", "acme.test"
    ).token
    config = tmp_path / "estafeta.toml"
    config.write_text(
        f'database_url = "{db_url}"\nhostname = "mta.acme.test"\n'
        '[api]\nhost = "127.0.0.1"\nport = 0\n[delivery]\npoll_interval = 0.1\n'
        "[smtp]\nenabled = false\n"
    )
    proc = subprocess.Popen(
        [*ESTAFETA, "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line:
                break
            entry = json.loads(line)
            assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)  # RFC 3339, UTC
            if entry["message"].startswith("serving API on "):
                url = entry["message"].removeprefix("serving API on ")
        assert url, "the server never said where it listens"
        response = httpx.post(
            f"{url}/v1/messages",
            headers={"Authorization": f"Bearer {token}"},
            json={"from": "a@acme.test", "to": ["b@example.test"], "text": "hi"},
        )
        assert response.status_code == 202
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in err


def test_bench_pipeline_prints_a_table_and_writes_json(tmp_path: Path) -> None:
    out_file = tmp_path / "pipeline.json"
    done = _run(
        ["bench", "pipeline", "--messages", "200", "--batch", "50", "--output", str(out_file)], tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "pipeline_msgs_per_s" in done.stdout
    result = json.loads(out_file.read_text())["result"]
    assert set(result) == {"sqlite", "postgresql"}  # each database backend by default
    for run in result.values():
        assert run["delivered"] == 200 and run["pipeline_msgs_per_s"] > 0


def test_bench_bounces_classifies_the_corpus_and_reports_samples_per_second(tmp_path: Path) -> None:
    out_file = tmp_path / "bounces.json"
    done = _run(["bench", "bounces", "--rounds", "1", "--output", str(out_file)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "samples_per_cpu_s" in done.stdout and "load_average" in done.stdout
    result = json.loads(out_file.read_text())["result"]
    labelled = (Path(__file__).parents[1] / "data" / "bounces" / "expected.csv").read_text().splitlines()
    assert result["samples"] == len(labelled) - 1  # every sample but the manifest's header line
    assert result["samples_per_cpu_s"] > 0 and result["meets_target"] == (result["samples_per_cpu_s"] >= 500)
    assert sum(v for k, v in result.items() if k.startswith("verdict_")) == result["samples"]
