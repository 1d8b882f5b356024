"""A task with a right answer: small arithmetic problems, and an exact-match reward that checks it.

The verifiable-reward demo (DeepSeek-R1 / TinyZero-style GRPO on a checkable answer, TRL's
`accuracy_reward`), small enough for SmolLM2-135M-Instruct on a CPU. A user asks for the result of
one operation on two small numbers ("What is 17 + 25? Reply with the number only."); each row carries
the right result in an `answer` column, which reaches a reward function as its keyword argument
`answer`, one value per completion, as TRL passes a data file's columns.

`exact_match_reward` (TRL's reward-function signature) reads the last number a completion writes
("17 + 25 = 42" -> 42, "The answer is -3." -> -3) and scores 1.0 when it equals the answer, else 0.0:
the last number, because a model that shows its work writes the result last. It is the training
reward and the held-out judge (`eulerforge evaluate --temperature 0 --judge
eulerforge_trl.examples.arithmetic:exact_match`): greedy decoding makes "right or wrong" a property
of the model, not of a sample. `answer_only` is a format reward (1.0 when the completion is a bare
number); summed with exact match it pays a bare wrong number, which GRPO learns to write
(docs/rewards.md), so it shows reward hacking rather than a reward to ship.

The problems of `arithmetic_eval.jsonl` never appear in `arithmetic.jsonl` (the same operation on the
same two numbers is held out as a whole), so a rise on them is learning the skill, not the rows.
Regenerate the files with:

    python -m eulerforge_trl.examples.arithmetic examples/data/math
"""

from __future__ import annotations

import math
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import write_jsonl_files

OPERATIONS = ("+", "-", "*")
MAX_OPERAND = {"+": 50, "-": 50, "*": 12}  # results stay below 2500, within a small model's reach
PROMPT_TEMPLATES = [
    "What is {a} {op} {b}? Reply with the number only.",
    "Compute {a} {op} {b}. Give just the number.",
    "{a} {op} {b} = ? Answer with a single number.",
    "Calculate {a} {op} {b} and reply with only the result.",
]
SYMBOL = {"+": "+", "-": "-", "*": "x"}  # "x" reads as times to a chat model; "*" reads as markdown
# a signed number, with an optional decimal part; "1,234" is read as 1234 (commas inside digits dropped)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def make_problem(rng: random.Random, operations: Sequence[str] = OPERATIONS) -> tuple[int, str, int]:
    """(a, op, b) with a >= b for subtraction, so every answer is a whole number >= 0."""
    op = rng.choice(list(operations))
    a, b = rng.randint(0, MAX_OPERAND[op]), rng.randint(0, MAX_OPERAND[op])
    if op == "-" and a < b:
        a, b = b, a
    return a, op, b


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def problem_row(rng: random.Random, a: int, op: str, b: int) -> dict:
    """One prompt-only row in TRL's conversational shape, with the right result as `answer`."""
    text = rng.choice(PROMPT_TEMPLATES).format(a=a, op=SYMBOL[op], b=b)
    return {"prompt": [{"role": "user", "content": text}], "answer": str(solve(a, op, b))}


def last_number(text: str) -> float | None:
    """The last number written in `text` ("so 3 + 4 = 7." -> 7.0), None when there is none.

    A minus sign right after a digit or a letter is an operator, not a sign ("10-3" -> 3, not -3).
    """
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,234 -> 1234
    found = None
    for match in NUMBER.finditer(text):
        value, start = match.group(), match.start()
        if value.startswith("-") and start > 0 and text[start - 1].isalnum():
            value = value[1:]
        found = value
    return float(found) if found is not None else None


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's conversational `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)


def as_number(answer: Any) -> float | None:
    """The `answer` cell as a number ("42", 42, 42.0, " 42 "); None when it is not one."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return float(answer)
    return last_number(str(answer)) if answer is not None else None


def exact_match_reward(completions: list, answer: list, **kwargs) -> list[float | None]:
    """1.0 where the completion's last number equals the row's `answer`, else 0.0 (TRL's signature).

    Args:
        completions: strings, or conversational completions (`[{"role": "assistant", "content": ...}]`).
        answer: the data file's `answer` column, one value per completion (a number or its text).
        kwargs: TRL's other keywords (prompts, completion_ids, trainer_state, other columns), unused.

    Returns:
        One value per completion; None (no reward, TRL's convention) where the answer is not a number.

    Example:
        >>> exact_match_reward(["7", "3 + 4 = 8", "It is 7."], answer=["7", "7", 7])
        [1.0, 0.0, 1.0]
    """
    rewards: list[float | None] = []
    for completion, right in zip(completions, answer, strict=True):
        expected, got = as_number(right), last_number(completion_text(completion))
        if expected is None:
            rewards.append(None)
        else:
            rewards.append(float(got is not None and math.isclose(got, expected, rel_tol=0, abs_tol=1e-9)))
    return rewards


def exact_match(prompts: list, completions: list, answer: list, **kwargs) -> list[float | None]:
    """`exact_match_reward` as an `eulerforge evaluate --judge`: its mean is the share answered right."""
    return exact_match_reward(completions, answer)


def answer_only(completions: list, **kwargs) -> list[float]:
    """1.0 where the completion is one number and nothing else ("42", " 42."), else 0.0: a format reward."""
    return [float(re.fullmatch(r"\s*-?\d+(?:\.\d+)?\.?\s*", completion_text(c)) is not None) for c in completions]


def problem_rows(rng: random.Random, n: int, exclude: set, distinct: bool) -> list[dict]:
    """`n` rows of problems not in `exclude`; with `distinct`, each problem once (and added to `exclude`)."""
    rows = []
    while len(rows) < n:
        problem = make_problem(rng)
        if problem in exclude:
            continue
        if distinct:
            exclude.add(problem)
        rows.append(problem_row(rng, *problem))
    return rows


def sft_row(row: dict) -> dict:
    """A prompt-only row as an SFT conversation: the user's question, the bare answer as the reply."""
    return {"messages": [*row["prompt"], {"role": "assistant", "content": row["answer"]}]}


def write_examples(
    out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_eval: int = 200, n_sft: int = 500
) -> dict[str, Path]:
    """Write under `out_dir`: `arithmetic.jsonl` (training prompts), `arithmetic_eval.jsonl` (distinct
    held-out problems, none of them in the other files) and `arithmetic_sft.jsonl` (other training
    problems with their answers, for the SFT stage of `smollm2_math_pipeline.yml`). The same seed
    gives the same bytes."""
    rng = random.Random(seed)
    held_out: set = set()
    eval_rows = problem_rows(rng, n_eval, held_out, distinct=True)
    train_rows = problem_rows(rng, n_train, held_out, distinct=False)
    sft_rows = [sft_row(row) for row in problem_rows(rng, n_sft, held_out, distinct=False)]
    files = {"arithmetic.jsonl": train_rows, "arithmetic_eval.jsonl": eval_rows, "arithmetic_sft.jsonl": sft_rows}
    return write_jsonl_files(out_dir, files)


if __name__ == "__main__":
    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "examples/data/math").values():
        print(f"wrote {path}")
