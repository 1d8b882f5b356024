"""GRPO reads data as PPO does: data.max_prompt_length and the held-out prompts (data.eval_*).

TRL 1.16's GRPOConfig has no max_prompt_length, and GRPO used to read every row of data.path and
ignore data.max_prompt_length and data.eval_path / data.eval_split without a word.
"""

from __future__ import annotations

import json

import pytest

from eulerforge_trl.errors import DataError
from eulerforge_trl.models.loading import load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main
from eulerforge_trl.trainers.group_policy import cut_prompts

FUNCTIONS = """
def length(prompts, completions, **kwargs):
    return [len(c) / 10.0 for c in completions]


def prompt_words(prompts, completions, **kwargs):  # how much of the prompt the function was shown
    return [float(len(p.split())) for p in prompts]
"""


def test_plain_prompts_keep_their_last_tokens_and_long_conversations_are_an_error():
    tokenizer = load_tokenizer("tiny-qwen3.5")
    long = "one two three four five six seven eight nine ten\nAnswer:"
    rows = cut_prompts([{"prompt": long, "solution": "x"}, {"prompt": "Hi"}], tokenizer, 4)
    assert len(tokenizer(rows[0]["prompt"])["input_ids"]) <= 4
    assert rows[0]["prompt"].endswith("Answer:") and rows[0]["solution"] == "x"  # the end is kept, columns too
    assert rows[1] == {"prompt": "Hi"}
    chat = [{"role": "user", "content": long}]
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match=r"data.max_prompt_length \(4\): 1 conversational prompts are longer"):
        cut_prompts([{"prompt": chat}], tokenizer, 4)


@pytest.fixture(scope="module")
def grpo_eval_run(tmp_path_factory, tiny_argv):
    """Two GRPO steps on the tiny base, a function as the reward, prompts cut to 6 tokens, 2% held out."""
    root = tmp_path_factory.mktemp("grpo_eval")
    (root / "rules.py").write_text(FUNCTIONS)
    argv = tiny_argv(
        "tiny_grpo.yml",
        root / "out",
        "model_name=tiny-qwen3.5",
        "training.reward_model.checkpoint_path=",
        f"training.reward_funcs=[{root / 'rules.py'}:length,{root / 'rules.py'}:prompt_words]",
        "training.max_steps=2",
        "training.save_steps=2",
        "training.batch_size=8",
        "training.grpo.max_completion_length=8",
        "training.grpo.sample_every=1",
        "data.max_prompt_length=6",
        "data.eval_split=0.02",
    )
    assert main(argv) == 0
    return root / "out"


def test_held_out_prompts_are_evaluated_before_and_after(grpo_eval_run, example_data):
    metrics = read_metrics(grpo_eval_run / "metrics.jsonl")
    evals = [m for m in metrics if "eval_reward_mean" in m]
    assert [m["step"] for m in evals] == [0, 2]
    assert all("eval_reward/length" in m for m in evals)
    records = [json.loads(line) for line in (grpo_eval_run / "eval_samples.jsonl").read_text().splitlines()]
    held_out = int(len((example_data / "prompts.jsonl").read_text().splitlines()) * 0.02)
    assert sorted({r["step"] for r in records}) == [0, 2]
    assert len([r for r in records if r["step"] == 0]) == held_out * 4  # num_generations completions each
    trained_on = [json.loads(line) for line in (grpo_eval_run / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in trained_on}) == [1, 2]


def test_prompts_are_cut_to_max_prompt_length(grpo_eval_run):
    samples = [json.loads(line) for line in (grpo_eval_run / "samples.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer("tiny-qwen3.5")
    assert all(len(tokenizer(r["prompt"])["input_ids"]) <= 6 for r in samples)
    assert all(r["rewards"]["prompt_words"] <= 6 for r in samples)
