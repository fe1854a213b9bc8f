"""Audience building blocks: templates, the plain-text converter, CSV import checks, segments, signed
tokens, and the subscription rules of the store (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from estafeta.audience import segments
from estafeta.audience.importer import CsvError, bought_list_flags, parse_csv
from estafeta.audience.templates import CampaignTemplate, TemplateProblem, html_to_text
from estafeta.audience.tokens import Tokens
from estafeta.cli import app
from estafeta.clock import ManualClock
from estafeta.store import accounts
from estafeta.store import audience as store
from estafeta.store.db import Database
from tests.tampering import tampered

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- templates --------------------------------------------------------------------------------------


def test_templates_render_in_the_sandbox_and_escape_html_only() -> None:
    template = CampaignTemplate("Hi {{ contact.name }}", "<p>{{ contact.name }}</p>", "Hi {{ contact.name }}")
    subject, html, text = template.render({"contact": {"name": "<Ana & Bo>"}})
    assert subject == "Hi <Ana & Bo>" and text == "Hi <Ana & Bo>"
    assert html == "<p>&lt;Ana &amp; Bo&gt;</p>"
    with pytest.raises(TemplateProblem, match="unsafe"):
        CampaignTemplate("s", "{{ x.__class__.__mro__[1].__subclasses__() }}", None).render({"x": 1})


def test_template_errors_name_the_part_and_line() -> None:
    with pytest.raises(TemplateProblem) as syntax:
        CampaignTemplate("ok", "<p>one</p>\n<p>two</p>\n{% for %}", None)
    assert (syntax.value.part, syntax.value.line) == ("html", 3)
    with pytest.raises(TemplateProblem) as runtime:
        CampaignTemplate("ok", None, "line one\n{{ 1 // contact.zero }}").render({"contact": {"zero": 0}})
    assert (runtime.value.part, runtime.value.line) == ("text", 2)
    assert "ZeroDivisionError" in runtime.value.reason
    with pytest.raises(TemplateProblem, match="html or a text template is required"):
        CampaignTemplate("s", None, None)


def test_plain_text_is_made_from_html_keeping_link_urls() -> None:
    html = (
        "<html><head><style>p{color:red}</style></head><body><h1>Spring</h1><p>Read <a href='https://a.test/x'>"
        "our news</a>&nbsp;&amp; more.</p><ul><li>one</li><li>two</li></ul><p>Bye<br>Ana</p>"
        '<a href="https://a.test/y">https://a.test/y</a><img alt="logo" src="l.png"></body></html>'
    )
    assert html_to_text(html) == (
        "Spring\n\nRead our news <https://a.test/x> & more.\n\n- one\n- two\n\nBye\nAna\n\nhttps://a.test/ylogo\n"
    )


# --- CSV import ----------------------------------------------------------------------------------------


def test_csv_rows_are_validated_with_a_reason_per_line() -> None:
    parsed = parse_csv(
        "Email,first_name,plan\nana@example.com,Ana,pro\nnot-an-address,Bo,\n"
        "ANA@example.com,Ana again,\n\nAna <x@example.com>,,\nbø@exämple.com,Bø,free\n"
    )
    assert [(r.line, r.email, r.attributes) for r in parsed.rows] == [
        (2, "ana@example.com", {"first_name": "Ana", "plan": "pro"}),
        (7, "bø@xn--exmple-cua.com", {"first_name": "Bø", "plan": "free"}),
    ]
    assert [(p.line, p.value) for p in parsed.invalid] == [(3, "not-an-address"), (6, "Ana <x@example.com>")]
    assert "@-sign" in parsed.invalid[0].reason and parsed.duplicates == 1
    with pytest.raises(CsvError, match="no `email` column"):
        parse_csv("name,address\nA,a@example.com\n")
    with pytest.raises(CsvError, match="empty"):
        parse_csv("")


def test_bought_list_signs_are_flagged() -> None:
    roles = "\n".join(f"{r}@shop{i}.example" for i, r in enumerate(["info", "sales", "admin", "support"]))
    people = "\n".join(f"person{i}@example.com" for i in range(20))
    invalid = "\n".join(f"broken{i}" for i in range(4))
    flags = {
        f.code: f
        for f in bought_list_flags(parse_csv(f"email\n{roles}\n{people}\n{invalid}\nspamtrap@x.test\n"))
    }
    assert set(flags) == {"role-addresses", "invalid-addresses", "spam-trap-like", "no-consent-record"}
    assert flags["role-addresses"].count == 4 and "info@shop0.example" in flags["role-addresses"].message
    ordered = "\n".join(sorted(f"user{i:03d}@example.com" for i in range(60)))
    assert {f.code for f in bought_list_flags(parse_csv(f"email,consent_at\n{ordered}\n"))} == {
        "alphabetical-order"
    }
    clean = "\n".join(f"user{i:03d}@example.com,2025-01-01" for i in reversed(range(60)))
    assert bought_list_flags(parse_csv(f"email,consent_at\n{clean}\n"), ["trap.test"]) == []
    assert (
        bought_list_flags(parse_csv("email,consent_at\nx@trap.test,2025\n"), ["trap.test"])[0].code
        == "spam-trap-like"
    )


# --- segments -------------------------------------------------------------------------------------


def test_segment_conditions() -> None:
    conditions = segments.parse_conditions(
        [
            {"attribute": "plan", "op": "eq", "value": "PRO"},
            {"attribute": "seats", "op": "gte", "value": 10},
            {"attribute": "email", "op": "contains", "value": "@example.com"},
            {"attribute": "country", "op": "in", "value": ["ES", "PT"]},
            {"attribute": "churned", "op": "missing"},
        ]
    )
    person = {"plan": "pro", "seats": "12", "email": "a@example.com", "country": "pt"}
    assert segments.matches(conditions, "all", person)
    assert not segments.matches(conditions, "all", {**person, "seats": 9})
    assert not segments.matches(conditions, "all", {**person, "churned": "2025-01-01"})
    assert segments.matches(conditions, "any", {"seats": 100})
    assert not segments.matches(conditions, "any", {"churned": "yes"})
    with pytest.raises(segments.SegmentError) as bad:
        segments.parse_conditions([{"attribute": "plan", "op": "like", "value": "p"}])
    assert bad.value.field == "conditions[0].op"
    with pytest.raises(segments.SegmentError, match="a list"):
        segments.parse_conditions([{"attribute": "plan", "op": "in", "value": "pro"}])


# --- tokens ---------------------------------------------------------------------------------------


def test_tokens_are_signed_per_purpose_and_confirmations_expire() -> None:
    clock = ManualClock(NOW)
    tokens = Tokens(b"k" * 32, clock)
    unsubscribe = tokens.unsubscribe(123456789, 42, 7)
    assert tokens.read_unsubscribe(unsubscribe) is not None
    assert tokens.read_unsubscribe(unsubscribe).campaign_id == 7  # type: ignore[union-attr]
    assert len(f"unsub+{unsubscribe}") <= 64  # fits a mailto local part
    assert all(c.isalnum() or c in "._-" for c in unsubscribe)
    assert tokens.read_preferences(unsubscribe) is None  # another purpose's token
    assert Tokens(b"x" * 32, clock).read_unsubscribe(unsubscribe) is None
    assert tokens.read_unsubscribe(tampered(unsubscribe)) is None
    assert tokens.read_preferences(tokens.preferences(9)) == 9

    confirm = tokens.confirm(5, 6)
    assert tokens.read_confirm(confirm, 3600) == (5, 6)
    clock.advance(3601)
    assert tokens.read_confirm(confirm, 3600) is None


# --- the store's subscription rules ---------------------------------------------------------------


@pytest.fixture
def news(db: Database) -> store.ListRow:
    account = db.call(accounts.create_account, "acme", NOW)
    return db.call(store.create_list, account.id, "News", "pub1", "news@acme.test", True, NOW)


def _entry(email: str, status: str = "unconfirmed", source: str = "form") -> store.NewSubscription:
    return store.NewSubscription(email, {"src": source}, status, source, NOW)


def test_subscribe_keeps_consent_and_never_undoes_an_unsubscribe(db: Database, news: store.ListRow) -> None:
    first = db.call(
        store.subscribe_many, news.account_id, news.id, [_entry("Ana@x.test")], renew=False, now=NOW
    )
    assert [(s.status, s.outcome) for s in first] == [("unconfirmed", "new")]
    contact = first[0].contact_id
    again = db.call(
        store.subscribe_many, news.account_id, news.id, [_entry("ana@x.test")], renew=False, now=NOW
    )
    assert [(s.contact_id, s.outcome) for s in again] == [(contact, "unchanged")]

    assert db.call(store.confirm, contact, news.id, NOW + timedelta(hours=1)) == "unconfirmed"
    sub = db.call(store.get_subscription, contact, news.id)
    assert sub is not None and sub.status == "subscribed" and sub.consent_source == "form"
    assert sub.consent_at == NOW and sub.confirmed_at == NOW + timedelta(hours=1)

    assert db.call(store.unsubscribe, contact, [news.id], "one-click", NOW) == [news.id]
    assert db.call(store.unsubscribe, contact, [news.id], "page", NOW) == []  # idempotent
    assert db.call(store.confirm, contact, news.id, NOW) == "unsubscribed"  # an old link changes nothing
    imported = db.call(
        store.subscribe_many, news.account_id, news.id, [_entry("ana@x.test", "subscribed", "import")],
        renew=False, now=NOW,
    )  # fmt: skip
    assert imported[0].outcome == "kept-unsubscribed"
    sub = db.call(store.get_subscription, contact, news.id)
    assert sub is not None and (sub.status, sub.unsubscribe_method) == ("unsubscribed", "one-click")
    renewed = db.call(
        store.subscribe_many, news.account_id, news.id, [_entry("ana@x.test")], renew=True, now=NOW
    )
    assert [(s.status, s.outcome) for s in renewed] == [("unconfirmed", "renewed")]
    assert db.call(store.get_contact, contact).attributes == {"src": "form"}  # type: ignore[union-attr]


def test_inactive_subscriptions_are_found_once_and_silent_ones_end(db: Database, news: store.ListRow) -> None:
    rows = db.call(
        store.subscribe_many, news.account_id, news.id,
        [_entry("a@x.test", "subscribed"), _entry("b@x.test", "subscribed")], renew=False, now=NOW,
    )  # fmt: skip
    later = NOW + timedelta(days=200)
    assert db.call(store.mark_engaged, news.account_id, "B@x.test", NOW + timedelta(days=100)) == 1
    inactive = db.call(store.inactive_since, later - timedelta(days=180), 100)
    assert [(list_id, email) for list_id, _, email in inactive] == [(news.id, "a@x.test")]
    assert db.call(store.mark_reconfirm_sent, news.id, [rows[0].contact_id], later) == [rows[0].contact_id]
    assert db.call(store.mark_reconfirm_sent, news.id, [rows[0].contact_id], later) == []
    assert db.call(store.inactive_since, later - timedelta(days=180), 100) == []
    assert db.call(store.end_unanswered_reconfirmations, later, later) == 0  # still within the grace
    ended_at = later + timedelta(days=15)
    assert db.call(store.end_unanswered_reconfirmations, later + timedelta(days=1), ended_at) == 1
    sub = db.call(store.get_subscription, rows[0].contact_id, news.id)
    assert sub is not None and (sub.status, sub.unsubscribe_method) == ("unsubscribed", "not-reconfirmed")


# --- the command line ------------------------------------------------------------------------------


def _cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI runs on a fresh database holding account `acme` with domain acme.test."""
    env = {"ESTAFETA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "COLUMNS": "200"}
    db = Database(env["ESTAFETA_DATABASE_URL"])
    db.migrate()
    account = db.call(accounts.create_account, "acme", NOW)
    db.call(accounts.add_domain, account.id, "acme.test", NOW)
    db.close()
    return env


def test_lists_import_command_reports_and_flags(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    runner = CliRunner()
    created = runner.invoke(app, ["lists", "create", "acme", "News", "--from", "news@acme.test"], env=env)
    assert created.exit_code == 0, created.output
    rows = "\n".join(f"{role}@shop{i}.example" for i, role in enumerate(["info", "sales", "admin"]))
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(f"email,name\nana@example.com,Ana\nnope\n{rows}\n")
    refused = runner.invoke(
        app, ["lists", "import", "acme", "News", str(csv_file), "--consent-source", "x"], env=env
    )
    assert refused.exit_code == 1 and "public_url" in refused.output
    imported = runner.invoke(
        app,
        ["lists", "import", "acme", "News", str(csv_file), "--consent-source", "fair", "--confirmed"],
        env=env,
    )
    assert imported.exit_code == 0, imported.output
    assert "nope" in imported.output and "@-sign" in imported.output
    assert "role-addresses" in imported.output and "no-consent-record" in imported.output
    listed = runner.invoke(app, ["lists", "list", "acme"], env=env)
    assert listed.exit_code == 0 and "News" in listed.output and " 4 " in listed.output


def test_segments_from_the_command_line(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    runner = CliRunner()
    assert (
        runner.invoke(app, ["lists", "create", "acme", "News", "--from", "n@acme.test"], env=env).exit_code
        == 0
    )
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "email,plan,age,country\na@x.test,pro,41,ES\nb@x.test,free,29,PT\nc@x.test,pro,25,FR\nd@x.test,pro,,ES\n"
    )
    imported = runner.invoke(
        app,
        ["lists", "import", "acme", "News", str(csv_file), "--consent-source", "s", "--confirmed"],
        env=env,
    )
    assert imported.exit_code == 0, imported.output

    def create(name: str, *conditions: str, match_any: bool = False) -> str:
        args = ["lists", "segments", "create", "acme", "News", name]
        args += [arg for c in conditions for arg in ("--where", c)] + (["--any"] if match_any else [])
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        return result.output

    assert "3 subscribed contacts" in create("Pro", "plan = pro")
    assert "1 subscribed contacts" in create("Senior Iberians", "age >= 30", "country in ES,PT")
    assert "2 subscribed contacts" in create(
        "Young or unknown age", "age < 28", "age missing", match_any=True
    )
    bad = runner.invoke(app, ["lists", "segments", "create", "acme", "News", "X", "--where", "plan"], env=env)
    assert bad.exit_code == 1 and "attribute OP value" in bad.output
    listed = runner.invoke(app, ["lists", "segments", "list", "acme", "News"], env=env)
    assert listed.exit_code == 0, listed.output
    assert (
        "plan = pro" in listed.output
        and "country in ES,PT" in listed.output
        and "age missing" in listed.output
    )
