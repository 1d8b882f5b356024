"""Sources that are broken in ways a reader does not expect: one DataError line naming the file (and
row), never a traceback from the reader."""

from __future__ import annotations

import json

import pytest

from eulerforge_trl.data.jsonl import read_rows
from eulerforge_trl.errors import DataError


@pytest.mark.parametrize(
    "row, message",
    [
        ({"messages": 5}, r"x.jsonl:1: field 'messages' must be a list of messages, got int"),
        ({"conversations": None}, r"x.jsonl:1: field 'conversations' must be a list of messages, got NoneType"),
        ({"conversations": 3}, r"x.jsonl:1: field 'conversations' must be a list of messages"),
        ({"conversations": [{"from": ["x"], "value": "hi"}]}, r"x.jsonl:1: field 'conversations'\[0\] has role"),
    ],
)
def test_message_fields_of_the_wrong_shape_name_the_file_and_line(tmp_path, row, message):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_rows(path, "sft")


def test_an_empty_json_file_holds_no_rows(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty.json: holds no rows"):
        read_rows(path, "sft")


def test_a_jsonl_file_starting_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "a", "response": "b"}).encode() + b"\n")
    assert read_rows(path, "sft") == [{"prompt": "a", "response": "b"}]
