"""Postfix as the yardstick: a private instance on loopback relaying to the benchmark sink, and `smtp-source`.

The instance has its own configuration, queue and data directories under a temporary directory (no
`postmulti`, nothing of the system's Postfix is used or changed) and relays everything to one
`relayhost`, with no DNS, no TLS and no DKIM: the least work an MTA can do to relay a message, which is
what Estafeta is compared with. Starting it needs root, as Postfix drops to its `postfix` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

POSTFIX_TOOLS = ("postfix", "postconf", "smtp-source", "smtp-sink")
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 60.0

_MASTER_SERVICES = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def missing_tools() -> list[str]:
    """The Postfix programs the comparison needs that are not installed (Debian package `postfix`)."""
    return [tool for tool in POSTFIX_TOOLS if tool_path(tool) is None]


def tool_path(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=_SEARCH_PATH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main_cf(workdir: Path, relay_port: int) -> str:
    """main.cf of the private instance: loopback only, everything relayed to [127.0.0.1]:`relay_port`."""
    return f"""\
compatibility_level = 3.6
queue_directory = {workdir / "queue"}
data_directory = {workdir / "data"}
maillog_file = {workdir / "maillog"}
maillog_file_prefixes = {workdir}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
biff = no
"""


@dataclass
class PostfixInstance:
    """A running private Postfix: where it listens and the master process to measure."""

    config: Path
    port: int
    master_pid: int


@contextlib.contextmanager
def private_postfix(workdir: Path, relay_port: int) -> Iterator[PostfixInstance]:
    """Start a Postfix of our own under `workdir` (listening on a free loopback port); stop it after."""
    workdir.chmod(0o755)  # Postfix's processes run as its own user and must reach the queue
    config = workdir / "config"
    config.mkdir(parents=True)
    (workdir / "queue").mkdir()
    (workdir / "data").mkdir()
    shutil.chown(workdir / "data", "postfix")  # its lock and cache files are the postfix user's
    (config / "main.cf").write_text(main_cf(workdir, relay_port))
    port = free_port()
    (config / "master.cf").write_text(_MASTER_SERVICES.format(port=f"127.0.0.1:{port}"))
    postfix = tool_path("postfix")
    assert postfix is not None
    _run([postfix, "-c", str(config), "start"])
    try:
        pid_file = workdir / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix did not listen on 127.0.0.1:{port}; see {workdir / 'maillog'}")
            time.sleep(0.1)
        yield PostfixInstance(config, port, int(pid_file.read_text().split()[0]))
    finally:
        subprocess.run([postfix, "-c", str(config), "stop"], capture_output=True, timeout=60, check=False)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout).strip()[-2000:]}")


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Send `messages` of `size` bytes over `sessions` parallel sessions; returns the wall-clock seconds."""
    tool = tool_path("smtp-source")
    assert tool is not None
    command = [tool, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    command += ["-f", "bench@bench.test", "-t", "user@gmail.test", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    _run(command)
    return time.perf_counter() - started


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Postfix's `smtp-sink` (C, PIPELINING) on a free loopback port: the machine's limit for SMTP."""
    tool = tool_path("smtp-sink")
    assert tool is not None
    port = free_port()
    command = [tool, "-u", "nobody"] if _is_root() else [tool]
    process = subprocess.Popen(
        [*command, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                problem = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"smtp-sink did not start: {problem}")
            time.sleep(0.05)
        yield port, process
    finally:
        process.terminate()
        process.wait(10)


def _is_root() -> bool:
    return os.geteuid() == 0
