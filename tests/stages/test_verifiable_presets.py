"""The verifiable-reward presets on a user's own problem, through the CLI: another data file (plain
text, its right answer under another column name), the user's reward function and judge from a file.

`smollm2_135m_lora_{grpo,ppo}_math.yml` must carry nothing of the shipped arithmetic task beyond
`data.path` and `training.reward_funcs`: swapping those two is all another task of the kind needs.
The reward function checks that each completion arrives with its own row's column (it raises
otherwise, which stops the run), so a misaligned column fails the test. Run on the tiny built-in
model for two steps (the presets' own model is the real SmolLM2).
"""

from __future__ import annotations

import json
import random

import pytest

from eulerforge_trl import cli
from eulerforge_trl.rundir import read_metrics

RULES = '''
import re

def _last_int(text):
    found = re.findall(r"-?\\d+", text)
    return int(found[-1]) if found else None

def checked(prompts, completions, target, **kwargs):
    """1.0 for the right difference; raises if a row's column is not that row's."""
    values = []
    for prompt, completion, right in zip(prompts, completions, target, strict=True):
        a, b = map(int, re.findall(r"\\d+", prompt)[:2])
        if a - b != right:
            raise ValueError(f"column misaligned: {prompt!r} got target {right}")
        values.append(float(_last_int(completion) == right))
    return values

def judge(prompts, completions, target, **kwargs):
    return checked(prompts, completions, target)
'''


@pytest.fixture(scope="module")
def user_task(tmp_path_factory):
    """Subtraction as plain-text prompts with a `target` column (an int), and the user's rules file."""
    out = tmp_path_factory.mktemp("user_task")
    rng = random.Random(3)

    def rows(n):
        pairs = [sorted((rng.randint(0, 30), rng.randint(0, 30)), reverse=True) for _ in range(n)]
        return [{"prompt": f"Subtract: {a} - {b} =", "target": a - b} for a, b in pairs]

    for name, n in (("train.jsonl", 48), ("held_out.jsonl", 6)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows(n)), encoding="utf-8")
    (out / "rules.py").write_text(RULES, encoding="utf-8")
    return out


def _train(preset, task, out):
    argv = ["train", preset, "--output-dir", str(out)]
    for item in (
        "model_name=tiny-qwen3.5",
        f"data.path={task / 'train.jsonl'}",
        f"training.reward_funcs=[{task / 'rules.py'}:checked]",
        "training.max_steps=2",
        "training.report_to=[]",
    ):
        argv += ["--set", item]
    assert cli.main(argv) == 0
    return [r for r in read_metrics(out / "metrics.jsonl") if r.get("step", 0) > 0 and "reward_mean" in r]


@pytest.mark.slow  # two CLI trainings and evaluations
@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_a_user_problem_trains_and_is_judged_greedily(stage, user_task, tmp_path, capsys):
    history = _train(f"smollm2_135m_lora_{stage}_math.yml", user_task, tmp_path / stage)
    assert [r["step"] for r in history] == [1, 2]
    for record in history:
        assert 0.0 <= record["reward/checked"] <= 1.0 and record["reward_mean"] == record["reward/checked"]
        assert "kl_divergence" in record
    out = tmp_path / "eval"
    argv = ["evaluate", "--models", "tiny-qwen3.5", str(tmp_path / stage / "final"), "--prompts"]
    argv += [str(user_task / "held_out.jsonl"), "--judge", f"{user_task / 'rules.py'}:judge", "--temperature", "0"]
    assert cli.main([*argv, "--max-new-tokens", "8", "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert all(0.0 <= row["judge_mean"] <= 1.0 for row in summary.values()) and len(summary) == 2


def test_the_math_presets_name_no_task_specifics_but_data_and_reward(repo):
    """Another task swaps `data.path` and `training.reward_funcs`: nothing else in the presets is the
    arithmetic task's (no eval file of its own, no RM)."""
    for stage in ("grpo", "ppo"):
        text = (repo / "presets" / f"smollm2_135m_lora_{stage}_math.yml").read_text(encoding="utf-8")
        body = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        task_lines = [line for line in body if "arithmetic" in line]
        assert [line.split("#")[0].strip() for line in task_lines] == [
            "path: examples/data/math/arithmetic.jsonl",
            "- eulerforge_trl.examples.arithmetic:exact_match_reward",
        ]
        assert "eval_path" not in "\n".join(body)
