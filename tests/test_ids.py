"""Row ids named in text (form fields, command-line arguments, fields of reports from outside)."""

from __future__ import annotations

from estafeta.ids import MAX_ID, new_message_id, parse_id


def test_text_names_an_id_only_in_range() -> None:
    assert [parse_id(t) for t in ("1", "42", str(MAX_ID))] == [1, 42, MAX_ID]
    for text in ("0", "-1", str(MAX_ID + 1), "9" * 5000, "\u00b2", "\uff11", "1.0", " 1", ""):
        assert parse_id(text) is None, text


def test_message_ids_are_distinct_and_sort_by_creation() -> None:
    ids = [new_message_id() for _ in range(5000)]  # more than one fetch of random bits
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 30 and i.startswith("msg_") for i in ids)
    assert sorted(ids, key=lambda i: i[4:14]) == ids
