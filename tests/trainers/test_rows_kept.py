"""Rows the TRL trainers drop for `data.max_length`: counted in a warning, and none left is one line
naming the data key and the limit (TRL itself fails later with `num_samples=0`)."""

from __future__ import annotations

import json

import pytest

from eulerforge_trl.train import main

LONG = " ".join(["word"] * 300)


def _rows(path, n_long: int, n_short: int, kind: str) -> str:
    rows = []
    for i in range(n_long + n_short):
        text = LONG if i < n_long else "a short one"
        if kind == "sft":
            rows.append({"prompt": f"{text} {i}", "response": "yes"})
        else:
            rows.append({"prompt": f"{text} {i}", "chosen": "good", "rejected": "bad"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("preset, kind", [("tiny_sft.yml", "sft"), ("tiny_dpo.yml", "preference")])
def test_every_row_too_long_is_one_line_and_exit_2(tmp_path, tiny_argv, capsys, preset, kind):
    data = _rows(tmp_path / "long.jsonl", 4, 0, kind)
    argv = tiny_argv(
        preset,
        tmp_path / "out",
        "model_name=tiny-qwen3.5",
        f"data.path={data}",
        "data.eval_path=null",
        "data.max_length=64",
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: data.path: all 4 rows are longer than data.max_length (64) tokens")


def test_some_rows_too_long_are_counted_in_a_warning(tmp_path, tiny_argv, caplog):
    data = _rows(tmp_path / "half.jsonl", 2, 4, "sft")
    argv = tiny_argv(
        "tiny_sft.yml",
        tmp_path / "out",
        f"data.path={data}",
        "data.eval_path=null",
        "data.max_length=64",
        "training.max_steps=1",
        "training.batch_size=2",
    )
    assert main(argv) == 0
    assert "data.path: 2 of 6 rows are longer than data.max_length (64) tokens and are left out" in caplog.text
