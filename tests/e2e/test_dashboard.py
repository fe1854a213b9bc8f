"""The dashboard in a real browser, against a platform filled by `estafeta demo`.

Each page is also photographed into tests/artifacts/ (kept by CI) and checked with axe-core: no serious
or critical accessibility violation on any page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.e2e.dashboard_support import ARTIFACTS, VIEWER, Served, launch_options, serve_demo, slug

OWNER_A = "owner@acme.test"
OWNER_B = "owner@deals.test"
OPERATOR = "operator@estafeta.test"


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    for old in ARTIFACTS.glob("*.png"):  # this run's screenshots only
        old.unlink()
    yield from serve_demo(tmp_path_factory.mktemp("dashboard-demo"))


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


# -- signing in ------------------------------------------------------------------------------------


def test_signing_in_needs_the_right_password_and_signing_out_ends_the_session(
    context: BrowserContext, served: Served
) -> None:
    page = context.new_page()
    page.goto(f"{served.url}/app/messages")
    assert "/app/login" in page.url  # not signed in: sent to the login page
    page.get_by_label("Email").fill(OWNER_A)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")
    page.get_by_label("Password").fill(served.logins[OWNER_A])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/app/messages$"))  # back where the user wanted to go
    cookie = next(c for c in context.cookies() if c["name"] == "estafeta_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/app/login"))
    page.goto(f"{served.url}/app/")
    assert "/app/login" in page.url


# -- the sender's views ----------------------------------------------------------------------------


def test_each_chart_shows_the_figures_of_the_stats_api(context: BrowserContext, served: Served) -> None:
    for account, email in (("acme", OWNER_A), ("bulkdeals", OWNER_B)):
        page = login(context, served, email)
        page.wait_for_function("() => window.estafetaCharts && window.estafetaCharts.broadcast")
        for stream in ("transactional", "broadcast"):
            chart = page.evaluate(f"() => window.estafetaCharts[{stream!r}]")
            canvas = page.locator(f"#chart-{stream} canvas").first
            expect(canvas).to_be_visible()
            assert canvas.bounding_box()["width"] > 200  # type: ignore[index]
            since = datetime.fromtimestamp(chart["x"][0], UTC).isoformat()
            until = datetime.fromtimestamp(chart["x"][-1] + 3600, UTC).isoformat()
            with served.api(account) as api:
                body = api.get(
                    "/v1/stats", params={"group_by": "stream", "bucket": "hour", "from": since, "to": until}
                ).json()
            expected = {
                name: [0] * len(chart["x"]) for name in chart["names"]
            }  # every series, every hour of the chart
            for group in body["data"]:
                if group["stream"] == stream:
                    at = chart["x"].index(int(datetime.fromisoformat(group["bucket"]).timestamp()))
                    for name in chart["names"]:
                        expected[name][at] = group["counts"].get(name, 0)
            assert chart["series"] == expected
            if stream == "broadcast":
                assert sum(expected["sent"]) > 0 and sum(expected["delivered"]) > 0
            for name in chart["names"]:  # the table under the chart says the same
                cell = page.locator(f'table[data-totals="{stream}"] td[data-series="{name}"]')
                expect(cell).to_have_text(f"{sum(expected[name]):,}")
        context.clear_cookies()


def test_a_message_timeline_shows_the_receivers_replies(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OWNER_B)
    page.get_by_role("link", name="Messages").click()
    page.get_by_label("Recipient").fill("bounce.test")
    page.get_by_label("State").select_option("bounced")
    page.get_by_role("button", name="Search").click()
    # htmx swaps the results in place and keeps the search in the address
    page.wait_for_function("() => location.search.includes('recipient=bounce.test')")
    expect(page.locator("#results tbody tr").first).to_contain_text("bounce.test")
    page.locator("#results tbody a").first.click()
    timeline = page.locator("#timeline")
    expect(timeline.locator('li[data-event="accepted"]')).to_have_count(1)
    bounced = timeline.locator('li[data-event="bounced"]')
    expect(bounced).to_contain_text("550 5.1.1")  # what the receiver answered
    expect(bounced).to_contain_text("user-unknown")


def test_the_pause_and_review_are_shown_and_an_operator_approves(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OWNER_B)
    states = page.get_by_role("table", name="Sending state per stream")
    expect(states.get_by_role("row", name=re.compile("broadcast"))).to_contain_text("paused")
    expect(page.get_by_label(re.compile("Hard-bounce rate"))).to_be_visible()
    shoot(page, "overview-paused-sender")
    answers = {
        "How do you collect the addresses?": "We bought them",
        "How do people give consent?": "They did not; we stop",
        "What do you send?": "Offers",
        "How often do you send?": "Weekly",
    }
    for question, answer in answers.items():
        page.get_by_label(question).fill(answer)
    page.get_by_role("button", name="Send the answers to the operators").click()
    expect(states.get_by_role("row", name=re.compile("broadcast"))).to_contain_text("under review")
    context.clear_cookies()

    page = login(context, served, OPERATOR)
    row = page.locator('tr[data-account="bulkdeals"]')
    expect(row).to_contain_text("under review")  # paused, answered, waiting for the operator
    expect(page.locator('tr[data-account="acme"]')).to_contain_text("ok")
    row.get_by_role("link", name=re.compile("waiting")).click()
    expect(page.get_by_role("heading", name="The four questions")).to_be_visible()
    expect(page.locator("main")).to_contain_text("We bought them")  # the sender's answers
    expect(page.get_by_role("heading", name="Evidence")).to_be_visible()
    expect(page.get_by_role("table", name=re.compile("Metrics when the review opened"))).to_contain_text(
        "now"
    )
    page.get_by_label("Note (kept in the audit trail)").first.fill("list cleaned, checked by phone")
    page.get_by_role("button", name="Approve: resume sending").click()
    expect(page.get_by_role("status")).to_contain_text("Review approved")
    expect(page.get_by_role("heading", name="Audit trail").locator("..")).to_contain_text("list cleaned")
    with served.api("bulkdeals") as api:
        standing = api.get("/v1/account/reputation").json()
    assert standing["streams"]["broadcast"]["state"] == "active"


def test_search_and_remove_a_suppression(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OWNER_B)
    page.get_by_role("link", name="Suppressions").click()
    page.get_by_label("Address or domain contains").fill("bounce.test")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("() => location.search.includes('q=bounce.test')")  # htmx swapped the results
    rows = page.locator("#results tbody tr")
    before = rows.count()
    assert before > 1
    for i in range(before):
        expect(rows.nth(i).locator("td").first).to_contain_text("bounce.test")
    value = rows.first.locator("td").first.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Remove {value}").click()
    expect(page.get_by_role("status")).to_contain_text(f"{value} removed")
    expect(page.locator("#results tbody tr")).to_have_count(before - 1)  # the search still applies
    with served.api("bulkdeals") as api:
        left = api.get("/v1/suppressions", params={"q": value}).json()["data"]
    assert all(entry["value"] != value for entry in left)


def test_a_new_key_is_shown_once_and_revoking_it_stops_it_at_once(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Name of the new key").fill("browser test")
    page.get_by_role("button", name="Create an API key").click()
    token = page.locator("#new-secret").inner_text()
    with served.api("acme") as api:
        assert api.get("/v1/usage", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    page.goto(f"{served.url}/app/keys")
    expect(page.locator("#new-secret")).to_have_count(0)  # shown once
    prefix = token.split("_")[1]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Revoke key {prefix}").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    expect(page.locator(f'tr[data-key="{prefix}"]')).to_contain_text("revoked")
    with served.api("acme") as api:
        assert api.get("/v1/usage", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_usage_against_the_plan_matches_the_api(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OPERATOR)
    page.get_by_role("link", name="Plans").click()
    page.get_by_label("Name").fill("Starter")
    page.get_by_label("Messages per month").fill("10000")
    page.get_by_label("Messages per day").fill("1000")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("table")).to_contain_text("Starter")
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("Plan of acme").select_option("Starter")
    page.locator('tr[data-account="acme"]').get_by_role("button", name="Set").click()
    expect(page.get_by_role("status")).to_contain_text("Plan of account")
    context.clear_cookies()
    with served.api("acme") as api:
        usage = api.get("/v1/usage").json()
    assert usage["plan"]["name"] == "Starter" and usage["messages_today"] > 0
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_label(re.compile("Messages today"))).to_be_visible()
    expect(page.locator("main")).to_contain_text(f"{usage['messages_today']:,} of 1,000")


def test_campaigns_are_created_scheduled_and_paused(context: BrowserContext, served: Served) -> None:
    with served.api("acme") as api:
        mailing_list = api.post(
            "/v1/lists", json={"name": "Customers", "from_address": "news@acme.test", "double_opt_in": False}
        ).json()
        for name in ("ana", "bo"):
            api.post(
                f"/v1/lists/{mailing_list['id']}/contacts",
                json={"email": f"{name}@gmail.test", "consent": {"source": "checkout", "confirmed": True}},
            ).raise_for_status()
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Lists").click()
    page.get_by_role("link", name="Customers", exact=True).click()
    expect(page.get_by_role("table")).to_contain_text("ana@gmail.test")
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_text("New campaign").click()
    page.get_by_label("Name").fill("Spring sale")
    page.get_by_label("List").select_option(label="Customers")
    page.get_by_label("Subject (template)").fill("Spring is here, {{ contact.email }}")
    page.get_by_label(re.compile("^HTML")).fill("<p>Hello!</p>")
    page.get_by_label(re.compile("^Send at")).fill("2099-04-01T09:00")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=re.compile("^State"))).to_contain_text("scheduled")
    expect(page.locator("main")).to_contain_text("2099-04-01 09:00 UTC")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", name=re.compile("^State"))).to_contain_text("paused")
    expect(page.get_by_role("heading", name="Results")).to_be_visible()
    with served.api("acme") as api:
        campaigns = api.get("/v1/campaigns").json()["data"]
    assert [(c["name"], c["state"], c["paused_for"]) for c in campaigns] == [
        ("Spring sale", "paused", "sender")
    ]
    page.get_by_role("link", name="Campaigns", exact=True).click()
    page.get_by_text("New campaign").click()
    page.get_by_label("Name").fill("Broken")
    page.get_by_label("Subject (template)").fill("{{ unclosed")
    page.get_by_label(re.compile("^HTML")).fill("<p>Hello!</p>")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("alert")).to_contain_text("subject")  # the template's error
    expect(page.get_by_label("Name")).to_have_value("Broken")  # the form keeps what was typed
    with served.api("acme") as api:
        assert len(api.get("/v1/campaigns").json()["data"]) == 1  # and nothing was made


def test_a_webhook_delivery_is_replayed(context: BrowserContext, served: Served) -> None:
    with served.api("acme") as api:
        endpoint = api.post("/v1/webhooks", json={"url": "https://hooks.acme.example/in"}).json()
        delivery = api.post(f"/v1/webhooks/{endpoint['id']}/test").json()
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_role("link", name="https://hooks.acme.example/in").click()
    expect(page.get_by_role("table")).to_contain_text("webhook.test")
    page.get_by_role("button", name=f"Replay delivery {delivery['id']}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Delivery {delivery['id']} queued again")


def test_an_invited_developer_joins_and_may_send_but_not_manage(browser: Browser, served: Served) -> None:
    owner_context = browser.new_context()
    page = login(owner_context, served, OWNER_A)
    page.get_by_role("link", name="Team").click()
    page.get_by_label("Email").fill("dev@acme.test")
    page.get_by_label("Role", exact=True).select_option("developer")
    page.get_by_role("button", name="Create an invitation link").click()
    link = page.locator("#invitation-link").inner_text()
    owner_context.close()
    guest = browser.new_context()
    page = guest.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Join acme")
    page.get_by_label("Password").fill("the developer's password")
    page.get_by_role("button", name="Join").click()
    page.wait_for_url(re.compile("/app/login"))
    served.logins["dev@acme.test"] = "the developer's password"
    page = login(guest, served, "dev@acme.test")
    page.get_by_role("link", name="Keys").click()
    expect(page.get_by_role("button", name="Create an API key")).to_be_visible()
    page.get_by_role("link", name="Team").click()
    expect(page.locator('form[action="/app/team/invitations"]')).to_have_count(0)
    again = guest.new_page()
    response = again.goto(link)  # the link worked once
    assert response is not None and response.status == 404
    guest.close()


# -- roles and accounts ----------------------------------------------------------------------------


def test_a_viewer_sees_no_forms_and_every_change_is_refused(context: BrowserContext, served: Served) -> None:
    page = login(context, served, VIEWER[0])
    for path in ("/app/", "/app/suppressions", "/app/keys", "/app/campaigns", "/app/team", "/app/webhooks"):
        page.goto(f"{served.url}{path}")
        posting = page.locator('form[method="post"]:not([action="/app/logout"]):not([action="/app/account"])')
        expect(posting).to_have_count(0)
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    prefix = served.tokens["acme"].split("_")[1]  # the demo's key of this very account
    attempts = {
        "/app/suppressions": {"address": "someone@example.com"},
        "/app/suppressions/remove": {"value": "bounce.test"},
        "/app/keys": {"name": "sneaky"},
        f"/app/keys/{prefix}/revoke": {},
        "/app/smtp-credentials": {},
        "/app/campaigns": {"name": "x", "list_id": "1", "subject": "x"},
        "/app/team/invitations": {"email": "friend@example.com", "role": "owner"},
        "/app/review-answers": {"collection": "a", "consent": "b", "content": "c", "frequency": "d"},
        "/app/admin/reviews/1/approve": {},
        "/app/admin/plans": {"name": "Free for me"},
    }
    for path, form in attempts.items():
        response = page.request.post(
            f"{served.url}{path}", form={"csrf_token": csrf or "", **form}, headers={"Origin": served.url}
        )
        assert response.status == 403, (path, response.status)
    with served.api("acme") as api:  # and nothing changed
        assert api.get("/v1/suppressions", params={"q": "someone@example.com"}).json()["data"] == []
        assert api.get("/v1/usage").status_code == 200  # the demo's key still works


def test_a_form_without_the_csrf_token_is_refused(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OWNER_A)
    response = page.request.post(f"{served.url}/app/suppressions", form={"address": "csrf@example.com"})
    assert response.status == 403
    forged = page.request.post(
        f"{served.url}/app/suppressions",
        form={"address": "csrf@example.com", "csrf_token": "forged"},
        headers={"Origin": served.url},
    )
    assert forged.status == 403
    with served.api("acme") as api:
        assert api.get("/v1/suppressions", params={"q": "csrf@example.com"}).json()["data"] == []


def test_account_a_never_sees_account_b(context: BrowserContext, served: Served) -> None:
    with served.api("bulkdeals") as api:
        mailing_list = api.post(
            "/v1/lists", json={"name": "Deals", "from_address": "offers@deals.test", "double_opt_in": False}
        ).json()
        campaign = api.post(
            "/v1/campaigns",
            json={"name": "Blast", "list_id": mailing_list["id"], "subject": "Deals", "text": "Buy now"},
        ).json()
        endpoint = api.post("/v1/webhooks", json={"url": "https://hooks.deals.example/events"}).json()
        message_id = api.get("/v1/events", params={"type": "accepted", "limit": 1}).json()["data"][0][
            "message_id"
        ]
        suppressed = api.get("/v1/suppressions", params={"q": "bounce.test", "limit": 1}).json()["data"][0][
            "value"
        ]
    page = login(context, served, OWNER_A)
    for path in (
        f"/app/messages/{message_id}",
        f"/app/lists/{mailing_list['id']}",
        f"/app/campaigns/{campaign['id']}",
        f"/app/webhooks/{endpoint['id']}",
    ):
        response = page.goto(f"{served.url}{path}")
        assert response is not None and response.status == 404, path
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    for path, form in (
        (f"/app/campaigns/{campaign['id']}/send", {}),
        (f"/app/webhooks/{endpoint['id']}/deliveries/1/replay", {}),
        (f"/app/keys/{served.tokens['bulkdeals'].split('_')[1]}/revoke", {}),
        ("/app/suppressions/remove", {"value": suppressed}),
    ):
        response = page.request.post(
            f"{served.url}{path}", form={"csrf_token": csrf, **form}, headers={"Origin": served.url}
        )
        assert response.status == 404, path
    page.goto(f"{served.url}/app/messages?recipient=deals")
    expect(page.locator("#results tbody")).to_contain_text("No message matches")
    with served.api("bulkdeals") as api:  # B's things are untouched
        assert api.get(f"/v1/campaigns/{campaign['id']}").json()["state"] == "draft"
        assert api.get("/v1/usage").status_code == 200


# -- every page: a screenshot and an accessibility check -------------------------------------------

SENDER_PAGES = (
    "/app/",
    "/app/?span=30d",
    "/app/messages",
    "/app/domains",
    "/app/suppressions",
    "/app/webhooks",
    "/app/lists",
    "/app/campaigns",
    "/app/keys",
    "/app/usage",
    "/app/team",
)
OPERATOR_PAGES = (
    "/app/admin",
    "/app/admin/reviews?state=all",
    "/app/admin/abuse",
    "/app/admin/suppressions",
    "/app/admin/providers",
    "/app/admin/plans",
)


def test_every_page_is_accessible_and_photographed(browser: Browser, served: Served) -> None:
    found: dict[str, list[str]] = {}
    for email, pages, viewport, prefix in (
        (OWNER_B, SENDER_PAGES, {"width": 1280, "height": 900}, "sender"),
        (OPERATOR, OPERATOR_PAGES, {"width": 1280, "height": 900}, "operator"),
        (
            OWNER_A,
            ("/app/", "/app/messages", "/app/suppressions", "/app/campaigns", "/app/keys", "/app/team"),
            {"width": 390, "height": 844},
            "phone",
        ),
    ):
        ctx = browser.new_context(viewport=viewport)
        page = login(ctx, served, email)
        paths = list(pages)
        if prefix == "sender":  # a detail page of each kind too
            page.goto(f"{served.url}/app/messages")
            paths.append(page.locator("#results tbody a").first.get_attribute("href") or "")
        if prefix == "operator":
            page.goto(f"{served.url}/app/admin/reviews?state=all")
            paths.append(page.locator("tbody a").first.get_attribute("href") or "")
        for path in paths:
            response = page.goto(f"{served.url}{path}")
            assert response is not None and response.status == 200, path
            if path.startswith("/app/?") or path == "/app/":
                page.wait_for_function("() => window.estafetaCharts && window.estafetaCharts.broadcast")
            shoot(page, f"{prefix}-{slug(path)}")
            if prefix == "phone":  # nothing wider than the phone's screen: wide tables scroll in place
                assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, path
            problems = serious_violations(page)
            if problems:
                found[f"{prefix} {path}"] = [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in problems]
        ctx.close()
    login_page = browser.new_page()
    login_page.goto(f"{served.url}/app/login")
    shoot(login_page, "login")
    problems = serious_violations(login_page)
    if problems:
        found["/app/login"] = [v["id"] for v in problems]
    login_page.close()
    assert not found, found
    assert len(list(Path(ARTIFACTS).glob("*.png"))) >= len(SENDER_PAGES) + len(OPERATOR_PAGES)
