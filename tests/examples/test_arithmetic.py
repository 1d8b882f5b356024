"""The arithmetic task: deterministic files, held-out problems really held out, and the exact-match rule
called as TRL calls reward functions (the `answer` column by keyword)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eulerforge_trl.examples import arithmetic
from eulerforge_trl.rewards.functions import call_reward_function, load_reward_function

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "examples" / "data" / "math"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return arithmetic.write_examples(tmp_path_factory.mktemp("math"))


def test_shipped_files_are_the_generator_s_and_deterministic(files: dict[str, Path], tmp_path: Path) -> None:
    again = arithmetic.write_examples(tmp_path)
    for name, path in files.items():
        assert again[name].read_bytes() == path.read_bytes(), name
        assert (SHIPPED / name).read_bytes() == path.read_bytes(), f"regenerate {SHIPPED}/{name}"
        assert path.stat().st_size < 1_000_000, name


def _problem(row: dict) -> str:
    """The operation and numbers of a row, whatever template words surround them."""
    text = row["prompt"][0]["content"]
    a, op, b = arithmetic.re.search(r"(\d+) ([+\-x]) (\d+)", text).groups()
    return f"{a}{op}{b}"


def test_rows_are_prompt_only_with_a_right_answer_and_the_held_out_problems_are_new(files) -> None:
    train, held_out = _rows(files["arithmetic.jsonl"]), _rows(files["arithmetic_eval.jsonl"])
    sft = [
        {"prompt": r["messages"][:1], "answer": r["messages"][1]["content"]}
        for r in _rows(files["arithmetic_sft.jsonl"])
    ]
    assert len(train) == 2000 and len(held_out) == 200 and len(sft) == 500
    for row in train + held_out + sft:
        assert sorted(row) == ["answer", "prompt"] and [m["role"] for m in row["prompt"]] == ["user"]
        a, op, b = arithmetic.re.search(r"(\d+) ([+\-x]) (\d+)", row["prompt"][0]["content"]).groups()
        assert int(row["answer"]) == arithmetic.solve(int(a), {"x": "*"}.get(op, op), int(b)) >= 0
    held = [_problem(r) for r in held_out]
    assert len(set(held)) == len(held), "held-out problems are distinct"
    assert not set(held) & {_problem(r) for r in train + sft}, "no held-out problem is in a training file"
    assert {op for p in held for op in "+-x" if op in p} == {"+", "-", "x"}


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("42", "42", 1.0),
        (" 42.", 42, 1.0),
        ("17 + 25 = 42", "42", 1.0),
        ("17 + 25 = 43", "42", 0.0),
        ("The answer is 42, not 41", "42", 0.0),  # the last number counts
        ("no number here", "42", 0.0),
        ("-3", "-3", 1.0),
        ("10-3", "3", 1.0),  # an operator, not a sign
        ("It comes to 1,234.", "1234", 1.0),
        ("42.0", "42", 1.0),
        ("42.5", "42", 0.0),
        ([{"role": "assistant", "content": "So it is 9"}], "9", 1.0),
    ],
)
def test_exact_match_reads_the_last_number(completion, answer, expected) -> None:
    assert arithmetic.exact_match_reward([completion], answer=[answer]) == [expected]


def test_an_answer_that_is_not_a_number_gives_no_reward() -> None:
    assert arithmetic.exact_match_reward(["4"], answer=["four"]) == [None]


def test_called_as_trl_calls_it_the_answer_column_arrives_by_keyword() -> None:
    """Through the same call PPO, GRPO and `evaluate --judge` use: the column by name, other keywords dropped."""
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]] * 3
    completions = [[{"role": "assistant", "content": c}] for c in ("4", "5", "2 + 2 = 4")]
    for spec in (
        "eulerforge_trl.examples.arithmetic:exact_match_reward",
        "eulerforge_trl.examples.arithmetic:exact_match",
    ):
        fn = load_reward_function(spec, key="training.reward_funcs")
        values = call_reward_function(
            fn, spec, prompts, completions, completion_ids=[[1], [2], [3]], answer=["4", "4", "4"], other=[0, 0, 0]
        )
        assert values == [1.0, 0.0, 1.0]
    none = call_reward_function(arithmetic.exact_match_reward, "f", ["p"], ["4"], answer=[None])
    assert math.isnan(none[0])


def test_answer_only_is_a_format_reward() -> None:
    assert arithmetic.answer_only(["42", " 42.\n", "It is 42", "42 + 1"]) == [1.0, 1.0, 0.0, 0.0]
