"""Reading the sending account out of a complaint's Feedback-ID, which comes from outside."""

from __future__ import annotations

from estafeta.bounces.abuse import feedback_account


def test_only_a_feedback_id_this_platform_wrote_names_an_account() -> None:
    assert feedback_account("spring:42:broadcast:estafeta") == 42
    for forged in ("spring:\u00b2:broadcast:estafeta", f"s:{2**64}:broadcast:e", "s:-1:b:e", "42", None):
        assert feedback_account(forged) is None, forged
