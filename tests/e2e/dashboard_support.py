"""A platform filled by the demo and served by `estafeta serve`, and a real Chromium to look at it.

The demo machinery runs once (a small `-n`), then `estafeta serve --role front` serves its database on a
free loopback port: the API and the dashboard, no delivery (nothing leaves the machine; DNS points at a
loopback port where nothing answers). Playwright drives Debian's Chromium (`/usr/bin/chromium`); it is
never downloaded. Without it the browser tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from rich.console import Console

from estafeta.demo import DemoResult, run_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
VIEWER = ("viewer@acme.test", "viewer password 123")
OWNER_A = "owner@acme.test"
OWNER_B = "owner@deals.test"
OPERATOR = "operator@estafeta.test"
OPERATOR_PAGES = (
    "/app/admin",
    "/app/admin/reviews?state=all",
    "/app/admin/abuse",
    "/app/admin/suppressions",
    "/app/admin/providers",
    "/app/admin/plans",
    "/app/admin/audit",
)


@dataclass
class Served:
    url: str
    demo: DemoResult
    tokens: dict[str, str]  # account name → API key
    logins: dict[str, str]  # email → password

    def api(self, account: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.tokens[account]}"}, timeout=30
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _estafeta(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "estafeta", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def serve_demo(workdir: Path, dns: tuple[str, int]) -> Iterator[Served]:
    """Run the demo into `workdir`, add a viewer with the CLI, and serve it until the caller is done, with
    `dns` (a running world's server) as its DNS: domains added on the pages are published there by RFC 2136
    update and verified, as in the sandbox."""
    demo = asyncio.run(run_demo(40, workdir, Console(file=io.StringIO(), width=120)))
    port = _free_port()
    env = {
        **os.environ,
        "ESTAFETA_DATABASE_URL": f"sqlite:///{demo.database}",
        "ESTAFETA_API__PORT": str(port),
        "ESTAFETA_SMTP__ENABLED": "false",
        "ESTAFETA_WEBHOOKS__ENABLED": "false",
        "ESTAFETA_DNS_SERVERS": f'["{dns[0]}:{dns[1]}"]',
        "ESTAFETA_DOMAINS__DNS_UPDATE": f"{dns[0]}:{dns[1]}",
        "ESTAFETA_HOSTNAME": "mta.estafeta.test",
    }
    made = _estafeta(
        ["users", "create", VIEWER[0], "--account", "acme", "--role", "viewer", "--password-stdin"],
        env,
        input=VIEWER[1] + "\n",
    )
    assert made.returncode == 0, made.stdout + made.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "estafeta", "serve", "--role", "front"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()  # so that reading what it said cannot wait for it
                _, said = server.communicate(timeout=30)
                raise AssertionError(f"estafeta serve did not start: {said}")
            time.sleep(0.2)
        yield Served(
            url,
            demo,
            {s.name: s.token for s in demo.senders},
            {**demo.logins, VIEWER[0]: VIEWER[1]},
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def launch_options() -> dict[str, Any]:
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {"executable_path": str(CHROMIUM), "headless": True, "args": CHROMIUM_ARGS}


def slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped: Playwright's synchronous API runs an event loop while it is open, which the async
    tests of other modules must not find running."""
    options = launch_options()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**options)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def login(context: BrowserContext, served: Served, email: str) -> Page:
    page = context.new_page()
    page.goto(f"{served.url}/app/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(served.logins[email])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/app/(admin)?$"))
    return page


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def serious_violations(page: Page) -> list[dict[str, Any]]:
    results = Axe().run(page)
    return [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def examine(page: Page, name: str, phone: bool) -> list[str]:
    """Photograph the page as `name` and return its serious or critical axe findings; on a phone, nothing
    may be wider than the screen (wide tables scroll inside their own box)."""
    shoot(page, name)
    if phone:
        width = page.viewport_size["width"] if page.viewport_size else 390
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width, page.url
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in serious_violations(page)]
