"""`estafeta bench compare`: Estafeta and Postfix side by side, in one run, relaying to the same sink.

Runs, in order: `smtp-source` → `smtp-sink` (the machine's SMTP limit); `smtp-source` → a private Postfix
→ the benchmark sink (accept rate, end-to-end relay rate, CPU of Postfix's processes); then Estafeta's
pipeline (API → sink) and relay (STARTTLS + AUTH + DKIM → sink) on each backend, each with one front
process and with one front process per core (`front.processes`). Ratios are Estafeta's
rate over Postfix's (pipeline over Postfix's end-to-end rate, relay accept over Postfix's accept rate),
and CPU-seconds per message, which move much less than wall-clock rates on a shared machine (on
PostgreSQL, the database server's included).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from estafeta import loop as event_loop
from estafeta.bench.pipeline import run_pipeline
from estafeta.bench.postfix import missing_tools, private_postfix, smtp_sink, smtp_source
from estafeta.bench.resources import load_average, tree_cpu_seconds
from estafeta.bench.sink import SinkProcess
from estafeta.bench.smtp import run_smtp

MESSAGE_BYTES = 2048  # about the size of the pipeline's and the relay's messages once signed
TIME_LIMIT = 600.0


def _rate(messages: int, seconds: float) -> float:
    return round(messages / seconds, 1) if seconds > 0 else 0.0


def reference_runs(messages: int, sessions: int, console: Console) -> dict[str, dict[str, Any]]:
    """The machine's limit and Postfix's figures (needs Debian's postfix and root)."""
    runs: dict[str, dict[str, Any]] = {}
    with console.status("smtp-source → smtp-sink"), smtp_sink() as (port, _):
        seconds = smtp_source(port, messages, sessions, MESSAGE_BYTES)
        runs["smtp-sink (limit)"] = {
            "messages": messages,
            "accept_msgs_per_s": _rate(messages, seconds),
            "loadavg": load_average(),
        }
    with (
        console.status("smtp-source → Postfix → sink"),
        tempfile.TemporaryDirectory(prefix="estafeta-postfix-") as tmp,
        SinkProcess(["gmail.test"]) as sink,
        private_postfix(Path(tmp), sink.addresses.smtp_port) as postfix,
    ):
        cpu_before = tree_cpu_seconds([postfix.master_pid])
        started = time.perf_counter()
        accept_seconds = smtp_source(postfix.port, messages, sessions, MESSAGE_BYTES)
        finished = event_loop.run(sink.wait_for(messages, TIME_LIMIT))
        cpu = tree_cpu_seconds([postfix.master_pid]) - cpu_before
        runs["postfix"] = {
            "messages": messages,
            "accept_msgs_per_s": _rate(messages, accept_seconds),
            "relayed": sink.received,
            "relayed_msgs_per_s": _rate(sink.received, finished - started),
            "cpu_ms_per_msg": round(1000 * cpu / messages, 2),
            "loadavg": load_average(),
        }
    return runs


def _row(result: dict[str, Any], accept_rate: str, relay_rate: str) -> dict[str, Any]:
    """One benchmark's figures under the names the comparison uses. Its CPU counts the PostgreSQL server's
    as well, as Postfix's counts the work of its own queue files."""
    return {
        "messages": result["messages"],
        "accept_msgs_per_s": result[accept_rate],
        "relayed": result["received_by_sink"],
        "relayed_msgs_per_s": result[relay_rate],
        "cpu_ms_per_msg": round(result["cpu_ms_per_msg"] + result.get("database_cpu_ms_per_msg", 0.0), 2),
        "loadavg": result["loadavg"],
    }


def estafeta_runs(
    messages: int, sessions: int, backends: list[str], postgresql_url: str, console: Console
) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    cores = os.cpu_count() or 1
    for backend in backends:
        for processes in sorted({1, cores}):
            suffix = f" {processes} processes" if processes > 1 else ""
            pipeline = event_loop.run(
                run_pipeline(
                    messages=messages,
                    batch=100,
                    algorithm="rsa-sha256",
                    backend=backend,
                    postgresql_url=postgresql_url,
                    console=console,
                    front_processes=processes,
                )
            )
            runs[f"pipeline {backend}{suffix}"] = _row(pipeline, "accept_msgs_per_s", "pipeline_msgs_per_s")
            relay = event_loop.run(
                run_smtp(
                    messages=messages,
                    sessions=sessions,
                    algorithm="rsa-sha256",
                    backend=backend,
                    postgresql_url=postgresql_url,
                    console=console,
                    front_processes=processes,
                )
            )
            runs[f"relay {backend}{suffix}"] = _row(relay, "msgs_per_s", "relayed_msgs_per_s")
    return runs


def add_ratios(runs: dict[str, dict[str, Any]]) -> None:
    """Each Estafeta run's rate over Postfix's (the issue's targets are ≥ 1.0) and its CPU over Postfix's.

    The pipeline starts at the API, so it is set against Postfix's end-to-end relay rate; the relay against
    Postfix's accept rate, as both answer SMTP clients."""
    postfix = runs["postfix"]
    for name, run in runs.items():
        if name.startswith("pipeline "):
            run["rate_vs_postfix"] = round(run["relayed_msgs_per_s"] / postfix["relayed_msgs_per_s"], 2)
        elif name.startswith("relay "):
            run["rate_vs_postfix"] = round(run["accept_msgs_per_s"] / postfix["accept_msgs_per_s"], 2)
        else:
            continue
        run["cpu_vs_postfix"] = round(run["cpu_ms_per_msg"] / postfix["cpu_ms_per_msg"], 2)


def run_compare(
    *, messages: int, sessions: int, backends: list[str], postgresql_url: str, console: Console
) -> dict[str, dict[str, Any]]:
    missing = missing_tools()
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's postfix package (apt-get install postfix)"
        )
    runs = reference_runs(messages, sessions, console)
    runs |= estafeta_runs(messages, sessions, backends, postgresql_url, console)
    add_ratios(runs)
    return runs
