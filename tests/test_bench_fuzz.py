"""The fuzz targets run briefly on every test run: atheris (libFuzzer) on the DSN and ARF parsers, seeded
with the bounce corpus, and on the relay's SMTP command handling. `estafeta bench fuzz` runs them longer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estafeta.bench.fuzz import TARGETS, FuzzFailure, check_replies, run
from estafeta.cli import app

BOUNCES = Path(__file__).parent / "data" / "bounces"


def _tail(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if "Instrumenting" not in line)[-3000:]


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_fuzzing_run_breaks_nothing(target: str, tmp_path: Path) -> None:
    result = run(target, tmp_path, seconds=8, seeds=[BOUNCES] if target != "smtp" else None)
    assert result.crashes == [] and result.exit_code == 0, _tail(result.output)
    assert result.runs > 0 and result.coverage > 0


def test_replies_are_checked_line_by_line() -> None:
    check_replies(b"220 mta ready\r\n250-mta\r\n250 SIZE 100\r\n334 \r\n221 2.0.0 Bye\r\n")
    for broken in (
        b'500 Error: command "\rX" not recognized\r\n',  # a bare CR inside a reply
        b"500 Error: (KeyError) 'x'\r\n",  # an exception a command raised
        b"250 " + b"x" * 600 + b"\r\n",  # over RFC 5321's 512 octets
        b"hello\r\n",
        b"250 ok",  # no CRLF
    ):
        with pytest.raises(FuzzFailure):
            check_replies(broken)


def test_the_command_reports_every_target(tmp_path: Path) -> None:
    output = tmp_path / "fuzz.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "fuzz",
            "-t",
            "arf",
            "--runs",
            "50",
            "--work",
            str(tmp_path / "work"),
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    assert document["benchmark"] == "fuzz" and document["result"]["arf crashes"] == 0
    assert document["result"]["arf inputs"] >= 50
    bad = CliRunner().invoke(app, ["bench", "fuzz", "-t", "nope"])
    assert bad.exit_code == 2 and "unknown target nope" in bad.output
