"""Chat formats people already have: ShareGPT, Alpaca and TRL's implicit-prompt preference rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eulerforge_trl.data.jsonl import extra_columns, read_rows
from eulerforge_trl.errors import DataError

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi?"}
ANSWER = {"role": "assistant", "content": "Hello."}
USER2 = {"role": "user", "content": "And?"}
ANSWER2 = {"role": "assistant", "content": "Bye."}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _sharegpt(*messages: dict) -> list[dict]:
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    return [{"from": names[m["role"]], "value": m["content"]} for m in messages]


def test_sharegpt_rows_become_messages_with_their_system_turn(tmp_path):
    rows = [
        {"conversations": _sharegpt(SYSTEM, USER, ANSWER, USER2, ANSWER2), "id": 1},
        {"system": "Be brief.", "conversations": _sharegpt(USER, ANSWER), "id": 2},
    ]
    path = _jsonl(tmp_path / "sharegpt.jsonl", rows)
    assert read_rows(path, "sft") == [
        {"prompt": [SYSTEM, USER, ANSWER, USER2], "response": [ANSWER2]},
        {"prompt": [SYSTEM, USER], "response": [ANSWER]},
    ]
    assert extra_columns(path, "sft") == {"id": [1, 2]}
    assert read_rows(path, "prompt_only") == [{"prompt": [SYSTEM, USER, ANSWER, USER2]}, {"prompt": [SYSTEM, USER]}]


def test_sharegpt_under_another_column_name_maps_with_data_columns(tmp_path):
    path = _jsonl(tmp_path / "chats.jsonl", [{"dialog": _sharegpt(USER, ANSWER)}])
    assert read_rows(path, "sft", columns={"dialog": "conversations"}) == [{"prompt": [USER], "response": [ANSWER]}]


def test_sharegpt_unknown_role_names_the_line_and_message(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"conversations": [{"from": "narrator", "value": "x"}]}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: field 'conversations'\[0\] has role 'narrator'"):
        read_rows(path, "sft")


def test_alpaca_rows_become_a_user_turn_and_an_answer(tmp_path):
    rows = [
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
        {"instruction": "Say hi.", "input": "", "output": "hi", "system": "Be brief."},
    ]
    path = _jsonl(tmp_path / "alpaca.jsonl", rows)
    assert read_rows(path, "sft") == [
        {"prompt": [{"role": "user", "content": "Translate.\n\nchat"}], "response": [ANSWER | {"content": "cat"}]},
        {"prompt": [SYSTEM, {"role": "user", "content": "Say hi."}], "response": [ANSWER | {"content": "hi"}]},
    ]
    assert read_rows(path, "prompt_only")[0] == {"prompt": [{"role": "user", "content": "Translate.\n\nchat"}]}
    assert extra_columns(path, "sft") == {}


def test_alpaca_preference_pairs(tmp_path):
    path = _jsonl(tmp_path / "pairs.jsonl", [{"instruction": "Hi?", "chosen": "Hello.", "rejected": "Go away."}])
    assert read_rows(path, "preference") == [
        {"prompt": [USER], "chosen": [ANSWER], "rejected": [ANSWER | {"content": "Go away."}]}
    ]


def test_implicit_prompt_preferences_split_off_their_shared_turns(tmp_path):
    """TRL's implicit-prompt form: whole conversations, the shared first turns are the prompt."""
    worse = ANSWER2 | {"content": "Whatever."}
    rows = [
        {"chosen": [SYSTEM, USER, ANSWER], "rejected": [SYSTEM, USER, ANSWER | {"content": "No."}]},
        {"chosen": [USER, ANSWER, USER2, ANSWER2], "rejected": [USER, ANSWER, USER2, worse]},
    ]
    assert read_rows(_jsonl(tmp_path / "implicit.jsonl", rows), "preference") == [
        {"prompt": [SYSTEM, USER], "chosen": [ANSWER], "rejected": [ANSWER | {"content": "No."}]},
        {"prompt": [USER, ANSWER, USER2], "chosen": [ANSWER2], "rejected": [worse]},
    ]


def test_implicit_prompt_from_a_parquet_file_in_sharegpt_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"chosen": _sharegpt(USER, ANSWER), "rejected": _sharegpt(USER, ANSWER2), "score": 0.5}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert read_rows(tmp_path / "p.parquet", "preference") == [
        {"prompt": [USER], "chosen": [ANSWER], "rejected": [ANSWER2]}
    ]
    assert extra_columns(tmp_path / "p.parquet", "preference") == {"score": [0.5]}


def test_implicit_prompt_with_nothing_shared(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"chosen": [USER, ANSWER], "rejected": [USER2, ANSWER2]}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: 'chosen' and 'rejected' share no first turn"):
        read_rows(path, "preference")


def test_rm_and_dpo_stages_train_on_implicit_prompt_pairs_from_a_hub_style_directory(tmp_path):
    """`train.main` on TRL's implicit-prompt pairs (as trl-lib/ultrafeedback_binarized holds them),
    saved with save_to_disk as a train/test DatasetDict, test split held out."""
    from datasets import Dataset, DatasetDict

    from eulerforge_trl.config import TINY_MODEL_NAME
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
    from eulerforge_trl.rundir import read_metrics
    from eulerforge_trl.train import main

    model_dir = tmp_path / "chat_model"
    tokenizer = load_tokenizer(TINY_MODEL_NAME)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    load_causal_lm(TINY_MODEL_NAME, tokenizer=tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    pairs = [
        {
            "chosen": [USER | {"content": f"Hi {i}?"}, ANSWER],
            "rejected": [USER | {"content": f"Hi {i}?"}, ANSWER2],
            "score_chosen": 8.0,
        }
        for i in range(6)
    ]
    DatasetDict({"train": Dataset.from_list(pairs[:4]), "test": Dataset.from_list(pairs[4:])}).save_to_disk(
        tmp_path / "pairs"
    )
    for preset in ("tiny_rm.yml", "tiny_dpo.yml"):
        out = tmp_path / preset
        argv = [preset, "--output-dir", str(out), "--set", f"model_name={model_dir}"]
        for item in (
            f"data.path={tmp_path / 'pairs'}",
            f"data.eval_path={tmp_path / 'pairs'}",
            "data.eval_path_split=test",
            "data.max_length=128",
            "training.max_steps=2",
            "training.batch_size=2",
            "training.save_steps=2",
            "training.report_to=[]",
        ):
            argv += ["--set", item]
        assert main(argv) == 0, preset
        assert any("eval_loss" in r for r in read_metrics(out / "metrics.jsonl")), preset
