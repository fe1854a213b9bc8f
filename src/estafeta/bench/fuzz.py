"""Fuzzing with atheris (libFuzzer's coverage-guided search, for Python): the bounce (RFC 3464) and complaint
(RFC 5965) parsers, and the relay's SMTP command handling.

Each target is a function of bytes that must return normally: the parsers read anything that arrives at the
return path without raising, and the relay answers every command line with a well-formed reply and never
with an internal error. libFuzzer ends the process it runs in, so each run is a child process
(`python -m estafeta.bench.fuzz <target> [libFuzzer options] [corpus directories]`); an input that breaks a
target is saved as `crash-<sha1>` in the artifact directory, and replays with
`python -m estafeta.bench.fuzz <target> crash-<sha1>`.

`estafeta bench fuzz` runs targets for a while and reports runs, coverage and crashes; the test suite runs
each one for a few seconds.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TARGETS = ("dsn", "arf", "smtp")
# What each target instruments for coverage (modules imported for the first time inside the fuzzing child).
_INSTRUMENTED = {
    "dsn": ["estafeta.bounces", "email", "flufl"],
    "arf": ["estafeta.bounces", "email"],
    "smtp": ["estafeta.smtp", "estafeta.compose", "estafeta.accept", "aiosmtpd", "email"],
}
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: \d+ corp: (\d+)/")
_RUNS = re.compile(r"Done (\d+) runs in (\d+) second")
_ARTIFACTS = ("crash-*", "timeout-*", "oom-*", "leak-*")


class FuzzFailure(AssertionError):
    """A target broke its contract on an input (libFuzzer saves it as a crash artifact)."""


# -- targets ---------------------------------------------------------------------------------------------


def dsn_target() -> Callable[[bytes], None]:
    from estafeta.bounces.dsn import BounceReport, parse_bounce

    def target(data: bytes) -> None:
        if not isinstance(parse_bounce(data), BounceReport):
            raise FuzzFailure("parse_bounce returned something else than a report")

    return target


def arf_target() -> Callable[[bytes], None]:
    from estafeta.bounces.arf import Complaint, parse_complaint

    def target(data: bytes) -> None:
        found = parse_complaint(data)
        if found is not None and not isinstance(found, Complaint):
            raise FuzzFailure("parse_complaint returned something else than a complaint or None")

    return target


_REPLY = re.compile(rb"[2-5]\d\d(?:[ -][^\r\n]*)?\r\n")
_INTERNAL_ERROR = b"500 Error: ("  # how aiosmtpd answers an exception a command raised


def check_replies(replies: bytes) -> None:
    """Every reply line is `<code>[ -]<text>CRLF`, none longer than RFC 5321's 512 octets, and none is an
    internal error."""
    position = 0
    for match in _REPLY.finditer(replies):
        if match.start() != position:
            raise FuzzFailure(f"malformed reply at byte {position}: {replies[position : position + 80]!r}")
        line = match.group()
        if len(line) > 512:
            raise FuzzFailure(f"reply line of {len(line)} octets: {line[:80]!r}")
        if line.startswith(_INTERNAL_ERROR):
            raise FuzzFailure(f"internal error: {line!r}")
        position = match.end()
    if position != len(replies):
        raise FuzzFailure(f"malformed reply at byte {position}: {replies[position : position + 80]!r}")


class SmtpSessions:
    """The relay with its accept path on a SQLite file in `directory`; each input is one client's bytes in
    one session over a socket pair. An input whose first byte is odd starts logged in (EHLO and AUTH sent
    first), so that MAIL, RCPT and DATA get fuzzed as much as the greeting and AUTH do."""

    def __init__(self, directory: Path) -> None:
        from estafeta.clock import ManualClock
        from estafeta.config import Settings
        from estafeta.core import Core
        from estafeta.sandbox import dns_settings
        from estafeta.smtp.server import SmtpRelay
        from estafeta.world import World, WorldThread

        self.loop = asyncio.new_event_loop()
        # The sending domain is verified in the world's DNS, so that MAIL and DATA reach the accept path.
        self.world = WorldThread(World())
        settings = Settings(
            **dns_settings(self.world.start().dns_address),
            database_url=f"sqlite:///{directory / 'fuzz.db'}",
            smtp={"tls_dir": directory / "tls", "rate_per_second": 0, "max_login_failures": 10**9},
            links={"enabled": False},
            warmup={"tiers": []},
            webhooks={"enabled": False},
        )
        self.core = Core(settings, clock=ManualClock())
        self.relay = SmtpRelay(
            settings, self.core.domains, self.core.accepter, self.core.smtp_credentials, self.core.limits
        )
        self.login = self.loop.run_until_complete(self._sender())

    async def _sender(self) -> bytes:
        import base64

        from estafeta.audit import SYSTEM

        account = await self.core.accounts.create("fuzz", actor=SYSTEM)
        await self.core.domains.add(account.id, "acme.test", actor=SYSTEM)
        credential = await self.core.smtp_credentials.create(account.id, actor=SYSTEM)
        token = base64.b64encode(f"\0{credential.username}\0{credential.password}".encode())
        return b"EHLO client.fuzz.test\r\nAUTH PLAIN " + token + b"\r\n"

    def __call__(self, data: bytes) -> None:
        prelude = self.login if data[:1] and data[0] & 1 else b""
        check_replies(self.loop.run_until_complete(self._session(prelude + data[1:])))

    async def _session(self, data: bytes) -> bytes:
        import socket

        from estafeta.smtp.server import RelaySMTP

        ours, theirs = socket.socketpair()
        await self.loop.connect_accepted_socket(
            lambda: RelaySMTP(self.relay, implicit_tls=True, ended=lambda: None), ours
        )
        reader, writer = await asyncio.open_connection(sock=theirs)
        try:
            writer.write(data + b"\r\n.\r\nQUIT\r\n")  # whatever state the session is in, it ends
            writer.write_eof()
            return await asyncio.wait_for(reader.read(), timeout=30)
        except TimeoutError:
            raise FuzzFailure("the session did not end within 30 seconds of QUIT") from None
        finally:
            writer.close()

    def close(self) -> None:
        self.loop.close()
        self.core.close()
        self.world.stop()


def smtp_seeds() -> list[bytes]:
    """Sessions to start from: a submission, a refused sender, an envelope with options, a bad AUTH."""
    message = b"From: Acme <hello@acme.test>\r\nTo: ana@gmail.test\r\nSubject: Hi\r\n\r\nHello.\r\n"
    return [
        b"\x01MAIL FROM:<hello@acme.test>\r\nRCPT TO:<ana@gmail.test>\r\nDATA\r\n" + message + b".\r\n",
        b"\x01MAIL FROM:<ceo@globex.test> SIZE=100\r\nRSET\r\nNOOP\r\nHELP\r\nVRFY ana\r\n",
        b"\x01MAIL FROM:<hello@acme.test> BODY=8BITMIME SMTPUTF8\r\n"
        + b"RCPT TO:<\xc3\xa1na@gmail.test>\r\nDATA\r\n"
        + message.replace(b"Hello.", b"Ol\xc3\xa1.")
        + b".\r\n",
        b"\x00EHLO x\r\nAUTH PLAIN AGJvYgBwdw==\r\nAUTH LOGIN\r\nYm9i\r\ncHc=\r\nMAIL FROM:<a@b.c>\r\n",
    ]


def _smtp_target(directory: Path) -> Callable[[bytes], None]:
    return SmtpSessions(directory)


def build_target(name: str, directory: Path) -> Callable[[bytes], None]:
    if name == "dsn":
        return dsn_target()
    if name == "arf":
        return arf_target()
    if name == "smtp":
        return _smtp_target(directory)
    raise ValueError(f"unknown fuzz target {name!r}; one of {', '.join(TARGETS)}")


# -- running ---------------------------------------------------------------------------------------------


@dataclass
class FuzzRun:
    target: str
    runs: int = 0
    seconds: int = 0
    coverage: int = 0
    corpus: int = 0
    crashes: list[Path] = field(default_factory=list)
    exit_code: int = 0
    output: str = ""


def run(
    target: str,
    work: Path,
    *,
    runs: int | None = None,
    seconds: int | None = None,
    seeds: list[Path] | None = None,
) -> FuzzRun:
    """Fuzz `target` in a child process for `runs` inputs or `seconds`; the corpus grows in
    `work/<target>/corpus`, artifacts land in `work/<target>/artifacts`."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r}; one of {', '.join(TARGETS)}")
    corpus, artifacts = work / target / "corpus", work / target / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    if target == "smtp" and not any(corpus.iterdir()):
        for number, seed in enumerate(smtp_seeds()):
            (corpus / f"seed-{number}").write_bytes(seed)
    limits = [f"-runs={runs}"] if runs is not None else []
    limits += [f"-max_total_time={seconds}"] if seconds is not None else []
    command = [
        sys.executable,
        "-m",
        "estafeta.bench.fuzz",
        target,
        *limits,
        "-max_len=16384",
        "-timeout=60",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
        *(str(seed) for seed in seeds or [] if seed.is_dir()),
    ]
    before = {p for pattern in _ARTIFACTS for p in artifacts.glob(pattern)}
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", cwd=work, check=False)
    output = done.stderr + done.stdout
    result = FuzzRun(target, exit_code=done.returncode, output=output)
    if found := _DONE.findall(output):
        result.runs, result.coverage, result.corpus = (int(v) for v in found[-1])
    if totals := _RUNS.findall(output):
        result.runs, result.seconds = int(totals[-1][0]), int(totals[-1][1])
    result.crashes = sorted({p for pattern in _ARTIFACTS for p in artifacts.glob(pattern)} - before)
    return result


@contextmanager
def _instrumented(target: str) -> Iterator[None]:
    import atheris

    with atheris.instrument_imports(include=_INSTRUMENTED[target]):
        yield


def main(argv: list[str]) -> None:
    """`python -m estafeta.bench.fuzz <target> [libFuzzer arguments]`: fuzz (or replay crash files). The
    SMTP target keeps its database in `<target>-state/` under the current directory, new on every run."""
    import logging
    import shutil

    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: python -m estafeta.bench.fuzz {{{','.join(TARGETS)}}} [libFuzzer options]")
    logging.disable(logging.CRITICAL)  # the relay logs every refusal; the fuzzer's own output is what counts
    directory = Path.cwd() / f"{argv[1]}-state"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    with _instrumented(argv[1]):
        target = build_target(argv[1], directory)
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
