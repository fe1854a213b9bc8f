"""The receivers' ledger: which deliveries were on the wire when a sender died, seen from the receiver."""

from __future__ import annotations

import time

from estafeta.world import World
from estafeta.world.ledger import Acknowledged, LedgerView, Span
from tests.test_world import RawSMTP, message


def _ack(session: int, recipient: str, began: float, acked: float) -> Acknowledged:
    return Acknowledged("yahoo.test", session, (recipient,), began, acked)


def test_in_flight_is_the_latest_transaction_begun_on_each_session_open_at_the_kill() -> None:
    view = LedgerView(
        (
            _ack(1, "a@yahoo.test", 1.0, 1.1),  # followed by another on its session: recorded before it began
            _ack(1, "b@yahoo.test", 2.0, 2.1),  # the latest on session 1 when the sender dies at 3.0
            _ack(2, "c@yahoo.test", 1.0, 1.1),  # its session ended before the kill
            _ack(3, "d@yahoo.test", 2.5, 3.2),  # begun before the kill, acknowledged after it
            _ack(3, "e@yahoo.test", 3.5, 3.6),  # begun after the kill (another sender)
            _ack(4, "f@yahoo.test", 3.5, 3.6),  # on a session opened after the kill
        ),
        {1: Span(1, 0.5, None), 2: Span(2, 0.5, 1.5), 3: Span(3, 2.4, 3.1), 4: Span(4, 3.4, None)},
    )
    assert sorted(a.recipients[0] for a in view.in_flight(3.0)) == ["b@yahoo.test", "d@yahoo.test"]
    assert view.in_flight(0.1) == []
    assert [a.recipients for a in view.copies()["a@yahoo.test"]] == [("a@yahoo.test",)]


def test_the_most_sessions_at_once_and_messages_in_a_window_are_per_provider() -> None:
    sessions = {
        1: Span(1, 0.0, 2.0, "metered.test"),
        2: Span(2, 1.0, 3.0, "metered.test"),
        3: Span(3, 2.0, None, "metered.test"),  # begins as session 1 ends: two at once, not three
        4: Span(4, 1.5, 2.5, "yahoo.test"),
    }
    acks = tuple(
        Acknowledged(provider, 1, ("r@x.test",), at, at)
        for provider, at in [("metered.test", t) for t in (0.1, 0.2, 0.3, 1.0, 1.05, 2.5)]
        + [("yahoo.test", 0.15)]
    )
    view = LedgerView(acks, sessions)
    assert view.most_sessions("metered.test") == 2
    assert view.most_sessions("yahoo.test") == 1
    assert view.most_acknowledged("metered.test", 1.0) == 5  # 0.1 to 1.05
    assert view.most_acknowledged("metered.test", 0.5) == 3
    assert view.most_acknowledged("yahoo.test", 1.0) == 1


async def test_sessions_and_acknowledged_data_are_recorded_with_their_times(world: World) -> None:
    before = time.monotonic()
    client = await RawSMTP.connect("127.0.0.12", world.smtp_port)
    for name in ("ann", "bob"):
        reply = await client.transaction("b@acme.test", f"{name}@yahoo.test", message("n@acme.test", name))
        assert reply.startswith("250")
    assert (
        await client.transaction("b@acme.test", "cy@yahoo.test", message("n@acme.test", "cy"))
    ).startswith("250")
    middle = time.monotonic()
    assert (await client.command("QUIT")).startswith("221")
    await client.closed_by_server()
    await client.close()
    view = world.ledger()
    assert world.acknowledged() == 3
    ann, bob, other = view.acknowledged
    assert ann.session == bob.session == other.session
    assert before < ann.began < ann.acked < bob.began < bob.acked < other.began <= middle
    span = view.sessions[ann.session]
    assert span.opened < ann.began and span.closed is not None and span.closed >= middle
    assert view.in_flight(middle) == [other]  # the latest transaction, while the session was open
    assert view.in_flight(time.monotonic()) == []  # the session has ended
    world.reset()
    assert world.ledger().acknowledged == ()
