"""Free text that people type (names, subjects, descriptions, notes), checked where it comes in.

Names and subjects end up in header fields and single-line displays: a list's name in the Subject of its
confirmation mail, a campaign's subject template, a stream's From domain. One control character stored there
would make every later message that uses it fail to compose, so such text is refused when it is set: one
line, no control characters, no lone surrogates (which no UTF-8 text can carry). Notes and answers may span
lines and use tabs, and nothing else of the sort.
"""

from __future__ import annotations

import unicodedata

from estafeta.compose.headers import line_break_or_control


class TextError(ValueError):
    """Text that cannot be stored; the message says which character and where it is allowed."""


def one_line(value: str) -> str:
    """`value` when it is one line without control characters; `TextError` otherwise."""
    if bad := line_break_or_control(value, allow_tab=False):
        raise TextError(f"must be one line without control characters; found {bad}")
    return value


def free_text(value: str) -> str:
    """`value` when its only control characters are line breaks and tabs; `TextError` otherwise."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs" or (category == "Cc" and char not in "\t\n\r"):
            raise TextError(
                f"must not contain control characters other than line breaks; found U+{ord(char):04X}"
            )
    return value


def flattened(value: str) -> str:
    """`value` on one line: each control character or line break becomes a space (for text stored before
    these checks existed)."""
    if line_break_or_control(value, allow_tab=False) is None:
        return value
    return "".join(" " if line_break_or_control(char, allow_tab=False) else char for char in value)
