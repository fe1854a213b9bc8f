"""The shared checks for free text: what passes `one_line` can go into a header field as it is."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estafeta.text import TextError, flattened, free_text, one_line

LINE_BREAKS = {"\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"}


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or char in LINE_BREAKS


@given(st.text())
def test_one_line_passes_exactly_the_text_without_breaks_or_controls(text: str) -> None:
    try:
        assert one_line(text) == text
    except TextError:
        assert any(_unsafe(c) for c in text)
    else:
        assert not any(_unsafe(c) for c in text)
        assert len(text.splitlines()) <= 1


@given(st.text())
def test_free_text_refuses_only_controls_other_than_line_breaks_and_tabs(text: str) -> None:
    refused = [c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r"]
    if refused:
        with pytest.raises(TextError, match=f"U\\+{ord(refused[0]):04X}"):
            free_text(text)
    else:
        assert free_text(text) == text


@given(st.text())
def test_flattened_text_is_one_line_and_keeps_everything_else(text: str) -> None:
    flat = flattened(text)
    assert one_line(flat) == flat
    assert len(flat) == len(text)
    assert all(a == b or (_unsafe(a) and b == " ") for a, b in zip(text, flat, strict=True))


def test_messages_name_the_character() -> None:
    with pytest.raises(TextError, match="U\\+0005"):
        one_line("news\u0005letter")
    assert free_text("line one\nline two\tend") == "line one\nline two\tend"
