"""The dashboard's management pages in a real browser: lists and CSV imports, contacts, campaigns to a
segment, webhook endpoints, sending domains, mailed invitations, operators looking at an account, and
the same rules as everywhere (roles, CSRF, accounts kept apart, phones, keyboard, axe)."""

from __future__ import annotations

import re
import sqlite3

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.dashboard_support import (
    OPERATOR,
    OPERATOR_PAGES,
    OWNER_A,
    OWNER_B,
    VIEWER,
    Served,
    browser,
    context,
    examine,
    login,
    shoot,
    slug,
)

__all__ = ["browser", "context"]  # the module's fixtures

CSV = (
    "email,first_name,consent_at\n"
    "lena@gmail.test,Lena,2025-03-01\n"
    "not an address,Broken,2025-03-01\n"
    "marc@yahoo.test,Marc,2025-03-02\n"
    "lena@gmail.test,Lena again,2025-03-03\n"
    "Named <named@outlook.test>,Named,2025-03-04\n"
)


def _post(page: Page, served: Served, path: str, form: dict[str, str]) -> int:
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value") or ""
    response = page.request.post(
        f"{served.url}{path}", form={"csrf_token": csrf, **form}, headers={"Origin": served.url}
    )
    return response.status


def _newsletter(served: Served) -> dict[str, object]:
    with served.api("acme") as api:
        return next(x for x in api.get("/v1/lists").json()["data"] if x["name"] == "Newsletter")


def test_a_list_is_made_and_a_csv_import_reports_each_bad_row(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Lists").click()
    page.get_by_text("New list").click()
    page.get_by_label("Name").fill("Newsletter")
    page.get_by_label(re.compile("^From address")).fill("News <news@acme.test>")
    expect(page.get_by_label(re.compile("^Double opt-in"))).to_be_checked()  # the safe default
    page.get_by_role("button", name="Create the list").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Newsletter")
    page.get_by_text("Import contacts from CSV").click()
    page.get_by_label(re.compile("^CSV file")).set_input_files(
        {"name": "spring.csv", "mimeType": "text/csv", "buffer": CSV.encode()}
    )
    page.get_by_label("Where these people agreed to get your mail").fill("spring fair 2025")
    page.get_by_role("button", name="Import").click()
    report = page.locator("#import-report")
    expect(report.get_by_role("row", name="Added")).to_contain_text("2")
    expect(report.get_by_role("row", name="Duplicates in the file")).to_contain_text("1")
    invalid = page.locator("#invalid-rows tbody tr")
    expect(invalid).to_have_count(2)
    expect(invalid.nth(0)).to_contain_text("3")  # the file's line numbers
    expect(invalid.nth(0)).to_contain_text("not an address")
    expect(invalid.nth(1)).to_contain_text("names go in other columns")
    shoot(page, "manage-list-import-report")
    newsletter = _newsletter(served)
    with served.api("acme") as api:  # the same import as the API's: double opt-in honoured
        contacts = api.get(f"/v1/lists/{newsletter['id']}/contacts").json()["data"]
    assert sorted((c["email"], c["status"], c["consent_source"]) for c in contacts) == [
        ("lena@gmail.test", "unconfirmed", "spring fair 2025"),
        ("marc@yahoo.test", "unconfirmed", "spring fair 2025"),
    ]
    expect(page.locator('tr[data-contact="lena@gmail.test"]')).to_contain_text("first_name=Lena")

    # search (htmx swaps the results and keeps the search in the address), then remove one contact
    page.get_by_label("Address contains").fill("marc")
    page.get_by_role("button", name="Search").click()
    page.wait_for_function("() => location.search.includes('q=marc')")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove marc@yahoo.test").click()
    expect(page.get_by_role("status")).to_contain_text("marc@yahoo.test removed from Newsletter")
    with served.api("acme") as api:
        contacts = api.get(f"/v1/lists/{newsletter['id']}/contacts", params={"status": "unsubscribed"})
        assert [(c["email"], c["unsubscribe_method"]) for c in contacts.json()["data"]] == [
            ("marc@yahoo.test", "sender")
        ]
        again = api.post(  # an import never brings a removed contact back
            f"/v1/lists/{newsletter['id']}/imports",
            params={"consent_source": "again"},
            content="email\nmarc@yahoo.test\n",
            headers={"Content-Type": "text/csv"},
        ).json()
    assert again["kept_unsubscribed"] == 1

    # a file that is no list at all is refused as a whole, and the page says why
    page.get_by_text("Import contacts from CSV").click()
    page.get_by_label(re.compile("^CSV file")).set_input_files(
        {"name": "bad.csv", "mimeType": "text/csv", "buffer": b"name,phone\nx,1\n"}
    )
    page.get_by_label("Where these people agreed to get your mail").fill("somewhere")
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("alert")).to_contain_text("no `email` column")


def test_a_campaign_to_a_segment_is_scheduled_paused_resumed_with_its_results(
    context: BrowserContext, served: Served
) -> None:
    newsletter = _newsletter(served)
    with served.api("acme") as api:
        api.post(
            f"/v1/lists/{newsletter['id']}/segments",
            json={"name": "Lenas", "conditions": [{"attribute": "first_name", "op": "eq", "value": "Lena"}]},
        ).raise_for_status()
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Campaigns").click()
    page.get_by_text("New campaign").click()
    page.get_by_label("Name").fill("Lena only")
    page.get_by_label(re.compile("^Audience")).select_option(label="Newsletter: segment Lenas")
    expect(page.locator("#c-stream")).to_contain_text("broadcast")
    page.get_by_label("Subject (template)").fill("Hello {{ contact.first_name }}")
    page.get_by_label(re.compile("^HTML")).fill("<p>Hi!</p>")
    page.get_by_label(re.compile("^Send at")).fill("2099-05-01T08:30")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=re.compile("^State"))).to_contain_text("scheduled")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("Lenas")
    expect(facts).to_contain_text("broadcast")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("heading", name=re.compile("^State"))).to_contain_text("paused")
    page.get_by_role("button", name="Resume").click()
    # sending again (or sent already: the segment's people have not confirmed yet, so none is due)
    expect(page.get_by_role("heading", name=re.compile("^State"))).to_contain_text(re.compile("sending|sent"))
    campaign_id = int(page.url.rstrip("/").split("/")[-1].split("?")[0])
    with served.api("acme") as api:
        body = api.get(f"/v1/campaigns/{campaign_id}").json()
    assert body["segment_id"] is not None and body["state"] in ("sending", "sent")
    results = page.locator("#campaign-results")
    for name in ("sent", "delivered", "bounced", "complained", "opened", "clicked", "unsubscribed"):
        expect(results.locator(f'td[data-result="{name}"]')).to_have_text(f"{body['stats'][name]:,}")
    shoot(page, "manage-campaign-results")


def test_webhook_endpoints_are_created_edited_tested_and_deleted(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_text("New endpoint").click()
    page.get_by_label(re.compile("^URL")).fill("http://127.0.0.1:9/private")
    page.get_by_role("button", name="Create the endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("public internet")  # the one check, as in the API
    page.get_by_label(re.compile("^URL")).fill("https://crm.acme.example/hooks")
    page.get_by_label("Description (optional)").fill("CRM")
    page.get_by_label("bounced", exact=True).check()
    page.get_by_label("complained", exact=True).check()
    page.get_by_role("button", name="Create the endpoint").click()
    expect(page.get_by_role("status")).to_contain_text("Endpoint created")
    expect(page.locator("main")).to_contain_text("Events: bounced, complained")
    endpoint_id = int(page.url.split("/app/webhooks/")[1].split("?")[0])
    with served.api("acme") as api:
        before = api.get(f"/v1/webhooks/{endpoint_id}").json()
    assert before["event_types"] == ["bounced", "complained"] and before["description"] == "CRM"

    page.get_by_text("Edit the endpoint").click()
    page.get_by_label("Description (optional)").fill("CRM, all events")
    page.get_by_label("bounced", exact=True).uncheck()
    page.get_by_label("complained", exact=True).uncheck()
    page.get_by_label(re.compile("^Replace the signing secret")).check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("new signing secret")
    with served.api("acme") as api:
        after = api.get(f"/v1/webhooks/{endpoint_id}").json()
    assert after["event_types"] == [] and after["description"] == "CRM, all events"
    assert after["secret"] != before["secret"]

    page.get_by_role("button", name="Send a test event").click()
    expect(page.get_by_role("status")).to_contain_text("Test delivery")
    expect(page.get_by_role("table")).to_contain_text("webhook.test")
    shoot(page, "manage-webhook")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete the endpoint").click()
    expect(page.get_by_role("status")).to_contain_text("Endpoint deleted")
    with served.api("acme") as api:
        assert api.get(f"/v1/webhooks/{endpoint_id}").status_code == 404


def test_an_owner_adds_a_domain_and_sees_the_records_to_publish(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Domains").click()
    page.get_by_text("Add a sending domain").click()
    page.get_by_label("Domain", exact=True).fill("acme.test")
    page.get_by_role("button", name="Add the domain").click()
    expect(page.get_by_role("alert")).to_contain_text("registered already")
    page.get_by_label("Domain", exact=True).fill("Mail.Acme-Shop.test")
    page.get_by_label("DKIM key").select_option("ed25519-sha256")
    page.get_by_role("button", name="Add the domain").click()
    expect(page.get_by_role("status")).to_contain_text("mail.acme-shop.test added")
    section = page.locator('section[data-domain="mail.acme-shop.test"]')
    expect(section.locator("tbody tr").first).to_be_visible()
    expect(section.locator("tbody")).to_contain_text("k=ed25519")  # the records to publish
    expect(section.locator("tbody")).to_contain_text("_dmarc.mail.acme-shop.test")
    for row in section.locator("tbody tr").all():  # DNS status per record
        expect(row.locator(".badge")).not_to_be_empty()
    section.get_by_role("button", name="Verify mail.acme-shop.test now").click()
    expect(page.get_by_role("status")).to_contain_text("mail.acme-shop.test is")
    state = page.locator('section[data-domain="mail.acme-shop.test"] [data-verification]')
    expect(state).to_have_text(re.compile("pending|verified|failing|unverified"))
    with served.api("acme") as api:  # the new domain can sign a list's mail at once
        made = api.post(
            "/v1/lists",
            json={"name": "Shop", "from_address": "shop@mail.acme-shop.test", "double_opt_in": True},
        )
    assert made.status_code == 201


def test_an_invitation_is_mailed_from_the_platform(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OWNER_A)
    page.get_by_role("link", name="Team").click()
    page.get_by_label("Email", exact=True).fill("designer@acme.test")
    page.get_by_label("Role", exact=True).select_option("viewer")
    expect(page.get_by_label("Mail the invitation to them")).to_be_checked()
    page.get_by_role("button", name="Invite").click()
    expect(page.locator("p.notice")).to_contain_text("it was mailed to them")
    link = page.locator("#invitation-link").inner_text()
    with sqlite3.connect(served.demo.database) as db:
        mailed = db.execute(
            "SELECT m.subject, m.raw FROM messages m JOIN deliveries d ON d.message_id = m.id "
            "WHERE d.recipient = 'designer@acme.test'"
        ).fetchall()
    assert len(mailed) == 1
    subject, raw = mailed[0]
    assert subject == "[Estafeta] owner@acme.test invites you to acme"
    assert link.encode() in bytes(raw).replace(b"=\r\n", b"")  # the very link, untracked


def test_an_operator_looks_at_an_account_without_changing_anything(
    context: BrowserContext, served: Served
) -> None:
    page = login(context, served, OPERATOR)
    row = page.locator('tr[data-account="bulkdeals"]')
    expect(row.locator("td").nth(0)).to_have_text(re.compile("ok|warning|paused|under review|suspended"))
    expect(row).to_contain_text("%")  # its rates
    row.get_by_role("button", name=re.compile("View the pages of bulkdeals")).click()
    page.wait_for_url(re.compile(r"/app/$"))
    banner = page.get_by_role("region", name="Operator view")
    expect(banner).to_contain_text("bulkdeals")
    page.wait_for_function("() => window.estafetaCharts && window.estafetaCharts.broadcast")
    for path in ("/app/messages", "/app/lists", "/app/campaigns", "/app/webhooks", "/app/suppressions"):
        page.goto(f"{served.url}{path}")
        expect(page.get_by_role("region", name="Operator view")).to_be_visible()
        changing = page.locator(
            'form[method="post"]:not([action="/app/logout"]):not([action="/app/account"])'
            ':not([action="/app/admin/view/stop"])'
        )
        expect(changing).to_have_count(0)
    for path, form in (
        ("/app/suppressions", {"address": "operator-was-here@example.com"}),
        ("/app/lists", {"name": "Operator list", "from_address": "x@deals.test"}),
        ("/app/webhooks", {"url": "https://ops.example/hook"}),
        ("/app/keys", {"name": "operator key"}),
    ):
        assert _post(page, served, path, form) == 403, path
    with served.api("bulkdeals") as api:
        assert api.get("/v1/suppressions", params={"q": "operator-was-here"}).json()["data"] == []
    page.get_by_role("button", name="Back to the operator pages").click()
    page.wait_for_url(re.compile(r"/app/admin$"))
    expect(page.get_by_role("region", name="Operator view")).to_have_count(0)


def test_a_viewer_changes_nothing_and_account_b_never_reaches_a(browser: Browser, served: Served) -> None:
    newsletter = _newsletter(served)
    with served.api("acme") as api:
        endpoint = api.post("/v1/webhooks", json={"url": "https://only.acme.example/in"}).json()
        campaign_id = api.get("/v1/campaigns").json()["data"][0]["id"]
        contact_id = api.get(f"/v1/lists/{newsletter['id']}/contacts").json()["data"][0]["contact_id"]
    writes = {
        "/app/lists": {"name": "Viewer list", "from_address": "news@acme.test"},
        f"/app/lists/{newsletter['id']}/contacts/{contact_id}/remove": {},
        "/app/webhooks": {"url": "https://viewer.example/hook"},
        f"/app/webhooks/{endpoint['id']}": {"url": "https://viewer.example/hook"},
        f"/app/webhooks/{endpoint['id']}/test": {},
        f"/app/webhooks/{endpoint['id']}/delete": {},
        f"/app/campaigns/{campaign_id}/cancel": {},
        "/app/domains": {"name": "viewer.example"},
    }
    viewer = browser.new_context()
    page = login(viewer, served, VIEWER[0])
    for path in ("/app/lists", f"/app/lists/{newsletter['id']}", "/app/webhooks", "/app/domains"):
        page.goto(f"{served.url}{path}")
        expect(page.locator('form[method="post"]:not([action="/app/logout"])')).to_have_count(0)
    for path, form in writes.items():
        assert _post(page, served, path, form) == 403, path
    viewer.close()

    other = browser.new_context()  # the owner of account B, with every right in B, sees none of A
    page = login(other, served, OWNER_B)
    for path in (
        f"/app/lists/{newsletter['id']}",
        f"/app/webhooks/{endpoint['id']}",
        f"/app/campaigns/{campaign_id}",
    ):
        response = page.goto(f"{served.url}{path}")
        assert response is not None and response.status == 404, path
    for path, form in writes.items():
        if path in ("/app/lists", "/app/webhooks", "/app/domains"):
            continue  # these make B's own things
        assert _post(page, served, path, form) == 404, path
    page.goto(f"{served.url}/app/lists")
    expect(page.locator("main")).not_to_contain_text("Newsletter")
    page.goto(f"{served.url}/app/webhooks")
    expect(page.locator("main")).not_to_contain_text("only.acme.example")
    other.close()
    with served.api("acme") as api:  # A's things are untouched
        assert api.get(f"/v1/webhooks/{endpoint['id']}").json()["url"] == "https://only.acme.example/in"
        statuses = {
            c["contact_id"]: c["status"]
            for c in api.get(f"/v1/lists/{newsletter['id']}/contacts").json()["data"]
        }
        assert statuses[contact_id] != "unsubscribed"
        assert [x["name"] for x in api.get("/v1/lists").json()["data"]].count("Viewer list") == 0


def test_the_keyboard_reaches_and_submits_a_form(context: BrowserContext, served: Served) -> None:
    page = login(context, served, OWNER_A)
    page.goto(f"{served.url}/app/lists")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")  # the first control of the page: the new-list form
    expect(page.get_by_text("New list")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("Keyboard list")
    page.keyboard.press("Tab")
    page.keyboard.type("news@acme.test")
    page.keyboard.press("Enter")  # submits the form
    expect(page.get_by_role("heading", level=1)).to_have_text("Keyboard list")


def test_the_new_pages_on_a_phone_pass_axe(browser: Browser, served: Served) -> None:
    newsletter = _newsletter(served)
    with served.api("acme") as api:
        campaign_id = api.get("/v1/campaigns").json()["data"][0]["id"]
        endpoint_id = api.get("/v1/webhooks").json()["data"][0]["id"]
    found: dict[str, list[str]] = {}
    for viewport, prefix in (
        ({"width": 390, "height": 844}, "phone"),
        ({"width": 1280, "height": 900}, "sender"),
    ):
        ctx = browser.new_context(viewport=viewport)
        page = login(ctx, served, OWNER_A)
        for path in (
            "/app/lists",
            f"/app/lists/{newsletter['id']}",
            "/app/campaigns",
            f"/app/campaigns/{campaign_id}",
            "/app/webhooks",
            f"/app/webhooks/{endpoint_id}",
            "/app/domains",
            "/app/team",
            "/app/suppressions",
            "/app/usage",
            "/app/keys",
        ):
            response = page.goto(f"{served.url}{path}")
            assert response is not None and response.status == 200, path
            for summary in page.locator("details > summary").all():  # the forms too
                summary.click()
            if problems := examine(page, f"{prefix}-{slug(path)}", prefix == "phone"):
                found[f"{prefix} {path}"] = problems
        ctx.close()
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    page = login(ctx, served, OPERATOR)
    page.goto(f"{served.url}/app/admin/reviews?state=all")
    review = page.locator("tbody a").first.get_attribute("href") or ""
    for path in (*OPERATOR_PAGES, review):
        response = page.goto(f"{served.url}{path}")
        assert response is not None and response.status == 200, path
        if problems := examine(page, f"phone-operator-{slug(path)}", True):
            found[f"phone operator {path}"] = problems
    page.goto(f"{served.url}/app/admin")
    page.locator('tr[data-account="acme"]').get_by_role("button", name=re.compile("View the pages")).click()
    page.wait_for_url(re.compile(r"/app/$"))
    if problems := examine(page, "phone-operator-viewing-acme", True):
        found["phone operator viewing acme"] = problems
    ctx.close()
    assert not found, found
