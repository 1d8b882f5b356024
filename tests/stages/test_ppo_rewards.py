"""PPO through the CLI with reward functions (alone or beside the RM) and with a separate RM.

The learning test: a reward function alone (no RM checkpoint, no random head) is what PPO raises.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

LEARN_STEPS = 25

RULES = '''
PLEASANT = {"happy", "bright", "kind", "calm", "warm", "gentle", "joyful", "sweet"}


def pleasant(prompts, completions, **kwargs):
    """Pleasant adjectives per answer, over 3 (the example answers hold three adjectives)."""
    return [sum(w.strip(".,").lower() in PLEASANT for w in c.split()) / 3.0 for c in completions]


def knows_animal(prompts, completions, animal):
    """1.0 when the row's `animal` column is the prompt's animal: columns arrive with their own row."""
    return [float(f" {a} " in p) for p, a in zip(prompts, animal)]


def boom(prompts, completions, **kwargs):
    raise ValueError("no reward today")


def too_few(prompts, completions, **kwargs):
    return [1.0]
'''


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(RULES)
    return path


@pytest.fixture
def prompts_with_animal(tmp_path, example_data):
    """32 example prompts with an `animal` column, for functions that take it as a keyword."""
    rows = [json.loads(line) for line in (example_data / "prompts.jsonl").read_text().splitlines()[:32]]
    path = tmp_path / "prompts_animal.jsonl"
    with path.open("w") as f:
        for row in rows:
            animal = re.search(r"the (\w+) (?:in|near|at) the", row["prompt"]).group(1)
            f.write(json.dumps({**row, "animal": animal}) + "\n")
    return path


def ppo_argv(tiny_argv, out, sft_final, rm_final, *overrides):
    return tiny_argv(
        "tiny_ppo.yml",
        out,
        f"model_name={sft_final}",
        f"training.reward_model.checkpoint_path={rm_final}",
        *overrides,
    )


SHORT = ("training.max_steps=2", "training.batch_size=8", "training.ppo.max_gen_len=12", "training.save_steps=10")


@pytest.mark.slow  # a learning run: ~60 s on 2 cores
def test_a_reward_function_alone_is_what_ppo_raises(tmp_path, tiny_argv, tiny_sft_final, rules, caplog):
    """No RM checkpoint: the function is the whole reward; no random head is built or warned about."""
    argv = ppo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        "",
        f"training.reward_funcs=[{rules}:pleasant]",
        f"training.max_steps={LEARN_STEPS}",
        "training.save_steps=100",
    )
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "RANDOM RewardHead" not in caplog.text
    _before, *history = read_metrics(tmp_path / "metrics.jsonl")
    assert len(history) == LEARN_STEPS
    assert all("reward/rm" not in r for r in history)
    for r in history:  # the total is the function's value (weight 1)
        assert r["reward_mean"] == pytest.approx(r["reward/pleasant"], abs=1e-5)
    k = LEARN_STEPS // 5  # first and last 20% of the steps
    first = sum(r["reward/pleasant"] for r in history[:k]) / k
    last = sum(r["reward/pleasant"] for r in history[-k:]) / k
    # measured: 0.515 -> 0.925 (2 cores, seed 42)
    assert last > first + 0.15, f"reward/pleasant did not rise: {first:.3f} -> {last:.3f}"


def test_rm_and_functions_add_up_and_are_logged_apart(
    tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final, rules, prompts_with_animal
):
    """total = rm.weight * RM + sum(w_i * f_i), each source logged as reward/<name> (eval_reward/<name>
    too); eval_split shuffles the rows, and each row's columns still reach the functions with it."""
    argv = ppo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        tiny_rm_final,
        *SHORT,
        f"data.path={prompts_with_animal}",
        "data.eval_split=0.25",
        "training.ppo.eval_prompts=8",
        f"training.reward_funcs=[{rules}:pleasant,{rules}:knows_animal]",
        "training.reward_weights=[2.0,0.5]",
        "training.reward_model.weight=0.3",
    )
    assert main(argv) == 0
    records = read_metrics(tmp_path / "metrics.jsonl")
    steps = [r for r in records if "reward_mean" in r]
    evals = [r for r in records if "eval_reward_mean" in r]
    assert len(steps) == 2 and len(evals) == 2  # before step 1 and after the last
    for r in steps:
        assert {"reward/rm", "reward/pleasant", "reward/knows_animal"} <= set(r)
        weighted = 0.3 * r["reward/rm"] + 2.0 * r["reward/pleasant"] + 0.5 * r["reward/knows_animal"]
        assert r["reward_mean"] == pytest.approx(weighted, abs=1e-4)
        assert r["reward/knows_animal"] == 1.0
    for r in evals:
        weighted = 0.3 * r["eval_reward/rm"] + 2.0 * r["eval_reward/pleasant"] + 0.5 * r["eval_reward/knows_animal"]
        assert r["eval_reward_mean"] == pytest.approx(weighted, abs=1e-4)
        assert r["eval_reward/knows_animal"] == 1.0


def _one_error_line(capsys) -> str:
    """The one `error: ...` line on stderr (progress bars of a run that started write there too)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_function_that_does_not_import_stops_before_anything_is_written(tmp_path, tiny_argv, tiny_sft_final, capsys):
    out = tmp_path / "out"
    argv = ppo_argv(tiny_argv, out, tiny_sft_final, "", "training.reward_funcs=[no_such_module_here:fn]")
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "training.reward_funcs no_such_module_here:fn" in line and "no module named" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "name, says", [("boom", "raised ValueError: no reward today"), ("too_few", "returned 1 values for 8 completions")]
)
def test_a_function_that_fails_at_run_time_is_exit_2_naming_it(
    tmp_path, tiny_argv, tiny_sft_final, rules, capsys, name, says
):
    argv = ppo_argv(tiny_argv, tmp_path / "out", tiny_sft_final, "", *SHORT, f"training.reward_funcs=[{rules}:{name}]")
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert f"training.reward_funcs {rules}:{name}: {says}" in line
    assert not (tmp_path / "out" / "final").exists()


# ------------------------------------------------------------------------------ a separate RM


def test_a_separate_rm_scores_a_policy_on_another_base(tmp_path, tiny_argv, tiny_sft_final, rm_on_another_base):
    argv = ppo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        rm_on_another_base,
        *SHORT,
        "training.reward_model.separate=true",
        "training.ppo.critic=adapter",  # a fresh critic adapter: the RM's is for another base
    )
    assert main(argv) == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == 2
    for r in history:
        assert r["reward_mean"] == pytest.approx(r["reward/rm"], abs=1e-5)
    assert len({r["reward_mean"] for r in history}) == 2  # real scores, not a constant


def test_a_separate_rm_scores_as_it_scores_on_its_own(tiny_sft_final, rm_on_another_base, tmp_path):
    """PPO's RM part equals `eulerforge_trl.score` with the RM loaded standalone (same rendering)."""
    from eulerforge_trl import load_reward_model, score
    from eulerforge_trl.config import load_preset
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
    from eulerforge_trl.rewards.sources import RewardSources

    preset = load_preset(
        "presets/tiny_ppo.yml",
        [
            f"model_name={tiny_sft_final}",
            f"training.reward_model.checkpoint_path={rm_on_another_base}",
            "training.reward_model.separate=true",
            "training.reward_model.weight=2.0",
            "training.report_to=[]",
        ],
        output_dir=str(tmp_path),
    )
    tokenizer = load_tokenizer(str(tiny_sft_final))
    sources = RewardSources.from_preset(preset, load_causal_lm(str(tiny_sft_final)), tokenizer, "cpu", "reward")
    prompts = ["Describe the cat near the park.\nAnswer:", "Tell me about the owl in the lake.\nAnswer:"]
    responses = [" The cat in the park is happy, kind and calm.", " The owl is"]
    total, parts = sources.score(prompts, responses)
    scorer, rm_tokenizer = load_reward_model(str(rm_on_another_base))
    expected = score(scorer, rm_tokenizer, prompts, responses)
    assert parts["reward/rm"].tolist() == pytest.approx(expected, abs=1e-5)
    assert total.tolist() == pytest.approx([2.0 * e for e in expected], abs=1e-5)


def test_the_same_rm_without_separate_is_exit_2_naming_both_sizes(
    tmp_path, tiny_argv, tiny_sft_final, rm_on_another_base, capsys
):
    argv = ppo_argv(tiny_argv, tmp_path / "out", tiny_sft_final, rm_on_another_base, *SHORT)
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "hidden_size=64" in line and "hidden_size=128" in line
    assert not (tmp_path / "out").exists()
