"""`estafeta bench bounces`: samples/second through the bounce classification engine, on one core.

Every file of a corpus (by default the labelled corpus in the source tree, tests/data/bounces) is read into
memory first; then the clock runs while `classify_message` goes through them all, `rounds` times, in this one
process and thread — what one inbound listener or one `estafeta bounces classify` has to work with. Both
wall-clock and CPU time are reported, with the machine's load average: on a busy machine the CPU figure is
the one that says what one core does, and the target is judged on it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from estafeta.bounces.engine import classify_message

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "tests" / "data" / "bounces"
TARGET = 500.0  # samples per second


def load_corpus(corpus: Path) -> list[bytes]:
    """The raw samples of a corpus directory (every file but its manifest), in a stable order."""
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix != ".csv")
    return [p.read_bytes() for p in files]


def run_bounces(*, corpus: Path, rounds: int, console: Console) -> dict[str, Any]:
    samples = load_corpus(corpus)
    if not samples:
        raise ValueError(f"no samples under {corpus}")
    verdicts: Counter[str] = Counter()
    with Progress(
        TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("classify", total=len(samples) * rounds)
        classify_message(samples[0])  # compile the classifier's patterns before the clock runs
        elapsed = cpu = 0.0
        for _ in range(rounds):
            started, started_cpu = time.perf_counter(), time.process_time()
            found = [classify_message(raw) for raw in samples]
            elapsed += time.perf_counter() - started
            cpu += time.process_time() - started_cpu
            progress.advance(task, len(samples))
        verdicts.update(f.verdict for f in found)
    total = len(samples) * rounds
    rate = total / elapsed
    per_core = total / cpu if cpu else rate
    return {
        "samples": len(samples),
        "rounds": rounds,
        "megabytes": round(sum(map(len, samples)) / 1e6, 2),
        "seconds": round(elapsed, 3),
        "samples_per_s": round(rate, 1),
        "samples_per_cpu_s": round(per_core, 1),
        "ms_per_sample": round(1000 / rate, 3),
        "cpu_ms_per_sample": round(1000 / per_core, 3),
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "target_samples_per_s": TARGET,
        "meets_target": per_core >= TARGET,
        **{f"verdict_{name}": count for name, count in sorted(verdicts.items())},
    }
