"""JSONL rows: the three tasks, `file:line` errors for bad input, and the evaluation split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eulerforge_trl.config.schema import DataSection
from eulerforge_trl.data.jsonl import load_splits, read_rows, to_trainer_columns
from eulerforge_trl.errors import DataError

ROWS = {
    "sft": [{"prompt": "Q1", "response": "A1"}, {"prompt": "Q2", "response": "A2"}],
    "preference": [{"prompt": "Q1", "chosen": "good", "rejected": "bad"}],
    "prompt_only": [{"prompt": "Q1"}, {"prompt": "Q2"}, {"prompt": "Q3"}],
}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _sft_file(path: Path, n: int) -> Path:
    return _jsonl(path, [{"prompt": f"Q{i}", "response": f"A{i}"} for i in range(n)])


# ------------------------------------------------------------------------------------ read_rows


@pytest.mark.parametrize("task", sorted(ROWS))
def test_read_rows_reads_each_task(task, tmp_path):
    path = _jsonl(tmp_path / f"{task}.jsonl", ROWS[task])
    assert read_rows(path, task) == ROWS[task]


def test_read_rows_keeps_only_the_task_fields_and_skips_blank_lines(tmp_path):
    path = _write(
        tmp_path / "rows.jsonl",
        '{"prompt": "Q", "response": "A", "id": 7, "source": "web"}\n\n   \n{"prompt": "Q2", "response": ""}\n',
    )
    assert read_rows(path, "sft") == [{"prompt": "Q", "response": "A"}, {"prompt": "Q2", "response": ""}]


def test_read_rows_reads_unicode(tmp_path):
    rows = [{"prompt": "Qu'est-ce que c'est ?\n", "response": " 猫 — ça va 🙂"}]
    assert read_rows(_jsonl(tmp_path / "u.jsonl", rows), "sft") == rows


def test_shipped_examples_read_for_their_tasks(example_data):
    assert len(read_rows(example_data / "sft.jsonl", "sft")) == 2000
    assert len(read_rows(example_data / "preference.jsonl", "preference")) == 1500
    assert len(read_rows(example_data / "prompts.jsonl", "prompt_only")) == 512


def test_malformed_json_line_gives_file_and_line(tmp_path):
    """Line 3 is cut off; blank line 2 still counts, so the number matches the editor's."""
    path = _write(tmp_path / "bad.jsonl", '{"prompt": "Q", "response": "A"}\n\n{"prompt": "Q", "resp\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:3: not valid JSON"):
        read_rows(path, "sft")


def test_line_that_is_not_an_object(tmp_path):
    path = _write(tmp_path / "list.jsonl", '{"prompt": "Q"}\n["Q", "A"]\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: expected a JSON object, got list"):
        read_rows(path, "prompt_only")


def test_missing_field_names_the_field_line_and_task(tmp_path):
    path = _jsonl(tmp_path / "pref.jsonl", [ROWS["preference"][0], {"prompt": "Q", "chosen": "good"}])
    with pytest.raises(DataError) as info:
        read_rows(path, "preference")
    message = str(info.value)
    assert message.startswith(f"{path}:2: missing field 'rejected'")
    assert "prompt, chosen, rejected" in message


def test_sft_row_with_dpo_fields_is_missing_response(tmp_path):
    """The usual mix-up (preference file given to SFT) is caught on line 1."""
    path = _jsonl(tmp_path / "pref.jsonl", ROWS["preference"])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: missing field 'response'"):
        read_rows(path, "sft")


@pytest.mark.parametrize(("value", "type_name"), [(3, "int"), (None, "NoneType"), ({"a": 1}, "dict")])
def test_non_string_field(value, type_name, tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "Q", "response": "A"}, {"prompt": "Q", "response": value}])
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(path))}:2: field 'response' must be a string or a list of messages, got {type_name}$",
    ):
        read_rows(path, "sft")


def test_list_that_is_not_messages_names_the_item(tmp_path):
    path = _jsonl(tmp_path / "rows.jsonl", [{"prompt": "Q", "response": ["a"]}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: field 'response'\[0\] must be a message like"):
        read_rows(path, "sft")


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "Q", "response": "A"}\n{"prompt": "caf\xe9", "response": "A"}\n')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: not UTF-8 text"):
        read_rows(path, "sft")


# ------------------------------------------------------------------------------- conversational

USER = [{"role": "user", "content": "Hi?"}]
ANSWER = [{"role": "assistant", "content": "Hello."}]


def test_messages_rows_split_into_prompt_and_last_assistant_turn(tmp_path):
    system = [{"role": "system", "content": "Be brief."}]
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": system + USER + ANSWER}])
    assert read_rows(path, "sft") == [{"prompt": system + USER, "response": ANSWER}]


def test_trl_prompt_completion_rows_read_as_sft(tmp_path):
    path = _jsonl(
        tmp_path / "pc.jsonl", [{"prompt": USER, "completion": ANSWER}, {"prompt": USER, "completion": ANSWER}]
    )
    assert read_rows(path, "sft") == [{"prompt": USER, "response": ANSWER}] * 2
    plain = _jsonl(tmp_path / "plain.jsonl", [{"prompt": "Q", "completion": "A"}])
    assert read_rows(plain, "sft") == [{"prompt": "Q", "response": "A"}]


def test_conversational_preferences_and_prompts(tmp_path):
    pair = {"prompt": USER, "chosen": ANSWER, "rejected": [{"role": "assistant", "content": "Go away."}]}
    assert read_rows(_jsonl(tmp_path / "p.jsonl", [pair]), "preference") == [pair]
    assert read_rows(_jsonl(tmp_path / "q.jsonl", [{"prompt": USER}]), "prompt_only") == [{"prompt": USER}]


def test_prompt_only_reads_sft_files(tmp_path):
    """PPO may reuse the SFT data: the prompt is used, the response ignored."""
    raw = _jsonl(tmp_path / "sft.jsonl", ROWS["sft"])
    assert read_rows(raw, "prompt_only") == [{"prompt": "Q1"}, {"prompt": "Q2"}]
    chat = _jsonl(tmp_path / "chat.jsonl", [{"messages": USER + ANSWER}])
    assert read_rows(chat, "prompt_only") == [{"prompt": USER}]


def test_assistant_message_missing_at_the_end_of_sft_messages(tmp_path):
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": USER}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: the last of 'messages' must be the assistant"):
        read_rows(path, "sft")


def test_one_format_per_file(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [{"prompt": "Q"}, {"prompt": USER}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: this row holds message lists"):
        read_rows(path, "prompt_only")
    row = _jsonl(tmp_path / "row.jsonl", [{"prompt": USER, "response": "text"}])
    with pytest.raises(DataError, match="mixes plain-text and message-list fields"):
        read_rows(row, "sft")


def test_missing_file_names_the_preset_key(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"^data.path: file not found: {re.escape(str(missing))}$"):
        read_rows(missing, "sft")
    with pytest.raises(DataError, match=r"^data.eval_path: file not found"):
        read_rows(missing, "sft", key="data.eval_path")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(text, tmp_path):
    path = _write(tmp_path / "empty.jsonl", text)
    with pytest.raises(DataError, match=rf"^data.path: {re.escape(str(path))} holds no rows$"):
        read_rows(path, "sft")


def test_sft_rows_become_trl_prompt_completion():
    """SFT's `response` is TRL's `completion` (the loss is on it only); other tasks keep their names."""
    assert to_trainer_columns(ROWS["sft"], "sft") == [
        {"prompt": "Q1", "completion": "A1"},
        {"prompt": "Q2", "completion": "A2"},
    ]
    assert to_trainer_columns(ROWS["preference"], "preference") == ROWS["preference"]


# ---------------------------------------------------------------------------------- load_splits


def _prompts(dataset) -> list[str]:
    return list(dataset["prompt"])


def test_no_evaluation_by_default(tmp_path):
    train, evaluation = load_splits(DataSection(path=str(_sft_file(tmp_path / "t.jsonl", 10))), seed=0)
    assert len(train) == 10 and evaluation is None
    assert train.column_names == ["prompt", "completion"]


def test_eval_split_is_deterministic_disjoint_and_complete(tmp_path):
    data = DataSection(path=str(_sft_file(tmp_path / "t.jsonl", 100)), eval_split=0.2)
    train, evaluation = load_splits(data, seed=42)
    again_train, again_eval = load_splits(data, seed=42)

    assert len(evaluation) == 20 and len(train) == 80
    assert _prompts(evaluation) == _prompts(again_eval) and _prompts(train) == _prompts(again_train)
    assert not set(_prompts(train)) & set(_prompts(evaluation))
    assert set(_prompts(train)) | set(_prompts(evaluation)) == {f"Q{i}" for i in range(100)}
    assert _prompts(evaluation) != [f"Q{i}" for i in range(20)], "the held-out rows should be shuffled"

    _, other_eval = load_splits(data, seed=7)
    assert set(_prompts(other_eval)) != set(_prompts(evaluation)), "the split follows training.seed"


def test_eval_split_holds_out_at_least_one_row(tmp_path):
    train, evaluation = load_splits(DataSection(path=str(_sft_file(tmp_path / "t.jsonl", 5)), eval_split=0.01), 0)
    assert (len(train), len(evaluation)) == (4, 1)


def test_eval_split_that_leaves_no_training_rows(tmp_path):
    data = DataSection(path=str(_sft_file(tmp_path / "t.jsonl", 1)), eval_split=0.5)
    with pytest.raises(DataError, match=r"data.eval_split \(0.5\) leaves no training rows"):
        load_splits(data, 0)


def test_eval_path_is_used_when_given(tmp_path):
    """eval_path wins over eval_split: the whole training file trains, the other file evaluates."""
    train_file = _sft_file(tmp_path / "t.jsonl", 10)
    eval_file = _jsonl(tmp_path / "e.jsonl", [{"prompt": "held-out", "response": "R"}])
    train, evaluation = load_splits(DataSection(path=str(train_file), eval_path=str(eval_file), eval_split=0.5), 0)
    assert len(train) == 10
    assert evaluation.to_list() == [{"prompt": "held-out", "completion": "R"}]


def test_missing_eval_path_names_its_key(tmp_path):
    data = DataSection(path=str(_sft_file(tmp_path / "t.jsonl", 3)), eval_path=str(tmp_path / "gone.jsonl"))
    with pytest.raises(DataError, match=r"^data.eval_path: file not found"):
        load_splits(data, 0)


def test_preference_splits_keep_their_columns(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    data = DataSection(path=str(_jsonl(tmp_path / "p.jsonl", rows)), task="preference", eval_split=0.3)
    train, evaluation = load_splits(data, 1)
    assert train.column_names == ["prompt", "chosen", "rejected"]
    assert (len(train), len(evaluation)) == (7, 3)
