"""The relay reads a plain MAIL FROM / RCPT TO path itself, and must read it exactly as aiosmtpd does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from estafeta.smtp.server import RelaySMTP


def _session(local_part_limit: int = 0) -> RelaySMTP:
    """Only what path parsing reads: no listener or connection needed."""
    session = RelaySMTP.__new__(RelaySMTP)
    session.local_part_limit = local_part_limit
    return session


def _read(method: Callable[[RelaySMTP, str], object], session: RelaySMTP, arg: str) -> object:
    try:
        return method(session, arg)
    except (
        IndexError
    ):  # aiosmtpd's parser fails on a path cut short (a lone "<"): the relay calls it malformed
        return None, None


def _both(arg: str, local_part_limit: int = 0) -> tuple[object, object]:
    session = _session(local_part_limit)
    return RelaySMTP._getaddr(session, arg), _read(SMTP._getaddr, session, arg)


@pytest.mark.parametrize("arg", ["<", " <", "<@"])
def test_a_path_cut_short_is_malformed_where_aiosmtpds_parser_fails(arg: str) -> None:
    with pytest.raises(IndexError):
        SMTP._getaddr(_session(), arg)
    assert RelaySMTP._getaddr(_session(), arg) == (None, None)  # answered 553 5.1.3, not 500


@pytest.mark.parametrize(
    "arg",
    [
        "<ana@gmail.test>",
        "<Ana.B+tag@Mail-1.Example.COM>  BODY=8BITMIME SMTPUTF8",
        "<ana@gmail.test>SIZE=100 ",
        "<ana@gmail.test>\tSIZE=1\tBODY=7BIT",
        "<ana@gmail.test> (comment) SIZE=1",
        '<"quoted"@gmail.test>',
        "<ana.@gmail.test>",
        "<ana@gmail..test>",
        "<ana@[192.0.2.1]>",
        "<>",
        "ana@gmail.test",
        "<ana@gmail.test> <bob@gmail.test>",
    ],
)
def test_paths_read_as_aiosmtpd_reads_them(arg: str) -> None:
    fast, reference = _both(arg)
    assert fast == reference


def test_a_local_part_over_the_limit_is_refused() -> None:
    assert _both("<abcdef@gmail.test>", local_part_limit=5) == ((None, None), (None, None))
    fast, reference = _both("<abcde@gmail.test>", local_part_limit=5)
    assert fast == reference == ("abcde@gmail.test", "")


@given(st.text(alphabet='ab.@<> \t()=+-"[]1é', max_size=40))
def test_any_path_is_read_as_aiosmtpd_reads_it(arg: str) -> None:
    fast, reference = _both(arg)
    assert fast == reference
