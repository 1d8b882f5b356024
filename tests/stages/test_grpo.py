"""GRPO end to end on the shared base: SFT -> RM -> GRPO through the CLI on the tiny model.

One base in memory: the policy adapter and the RM adapter sit on one PeftModel handed to TRL, the
reference is that model with adapters disabled (TRL's `ref_model` stays None), and the RM adapter
never trains.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from eulerforge_trl.rundir import FINAL_MARKER, read_metrics
from eulerforge_trl.train import main

SEED_NAMES = ("reward_mean", "kl_divergence", "entropy", "loss", "reward/rm", "time_step")
LEARN_STEPS = 30

# A reward function with TRL's signature: 1 for an answer that names a pleasant word, else 0.
FUNCTIONS = """
PLEASANT = ("happy", "bright", "kind", "calm", "warm", "gentle", "joyful", "sweet")


def pleasant(prompts, completions, **kwargs):
    return [float(any(w in c for w in PLEASANT)) for c in completions]


def pleasant_count(prompts, completions, **kwargs):  # pleasant words per answer, over 3
    return [sum(w.strip(".,").lower() in PLEASANT for w in c.split()) / 3.0 for c in completions]


def boom(prompts, completions, **kwargs):
    raise RuntimeError("no reward today")


def short(prompts, completions, **kwargs):
    return [1.0]
"""


def grpo_argv(tiny_argv, out, sft_final, rm_final, *overrides):
    return tiny_argv(
        "tiny_grpo.yml",
        out,
        f"model_name={sft_final}",
        f"training.reward_model.checkpoint_path={rm_final}",
        *overrides,
    )


SHORT = (
    "training.max_steps=4",
    "training.save_steps=2",
    "training.batch_size=8",
    "training.grpo.max_completion_length=12",
)


@pytest.fixture(scope="module")
def functions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "rules.py"
    path.write_text(FUNCTIONS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, tiny_argv, tiny_sft_final, tiny_rm_final):
    out = tmp_path_factory.mktemp("tiny_grpo")
    assert main(grpo_argv(tiny_argv, out, tiny_sft_final, tiny_rm_final, *SHORT, "training.grpo.sample_every=2")) == 0
    return out


def test_grpo_writes_seed_metrics_samples_plot_and_final(short_run, tiny_sft_final):
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    history = [r for r in read_metrics(short_run / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    for key in (*SEED_NAMES, "reward", "kl", "rewards/rm/mean"):  # ours beside TRL's own
        assert all(key in r for r in history), key
    assert history[0]["reward_mean"] == pytest.approx(history[0]["reward/rm"])  # one source, weight 1
    assert history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    samples = [json.loads(line) for line in (short_run / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2, 4}
    assert {"step", "prompt", "response", "reward", "rewards"} <= set(samples[0])
    assert (short_run / "training_curves.png").stat().st_size > 1000
    final = short_run / "final"
    assert json.loads((final / FINAL_MARKER).read_text())["stage"] == "grpo"
    for name in ("adapter_config.json", "adapter_model.safetensors", "preset.yml", "tokenizer.json"):
        assert (final / name).is_file(), name
    assert not (final / "reward").exists(), "final/ holds the policy adapter only"
    # final/ loads as model_name (the policy adapter on the SFT base)
    tokenizer = load_tokenizer(str(final))
    policy = load_causal_lm(str(final), tokenizer=tokenizer)
    sft = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer)
    ids = tokenizer(["Describe the cat near the park.\nAnswer:"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(policy(ids).logits, sft(ids).logits)


def test_one_base_in_memory_and_the_rm_adapter_never_trains(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """Capture the trainer TRL builds: no ref_model, no second copy of the base, RM adapter frozen and unchanged."""
    from trl import GRPOTrainer

    from eulerforge_trl.models.loading import load_causal_lm

    seen = {}
    original_train = GRPOTrainer.train

    def spy(self, *args, **kwargs):
        model = self.model
        seen["ref_model"] = self.ref_model
        seen["adapters"] = set(model.peft_config)
        seen["rm_before"] = {n: p.detach().clone() for n, p in model.named_parameters() if ".reward." in n}
        seen["base_params"] = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        result = original_train(self, *args, **kwargs)
        seen["rm_after"] = {n: p.detach().clone() for n, p in model.named_parameters() if ".reward." in n}
        seen["rm_requires_grad"] = any(p.requires_grad for n, p in model.named_parameters() if ".reward." in n)
        seen["active"] = model.active_adapter
        return result

    GRPOTrainer.train = spy
    try:
        assert main(grpo_argv(tiny_argv, tmp_path, tiny_sft_final, tiny_rm_final, *SHORT, "training.lr=1e-2")) == 0
    finally:
        GRPOTrainer.train = original_train
    sft_params = sum(p.numel() for p in load_causal_lm(str(tiny_sft_final)).parameters())
    assert seen["ref_model"] is None
    assert seen["adapters"] == {"default", "reward"}  # no "ref" copy: the reference is adapters disabled
    assert seen["base_params"] == sft_params  # one base: its weights once, plus LoRA matrices
    assert seen["rm_before"] and all(".default." in n for n in seen["trainable"])
    assert not seen["rm_requires_grad"] and seen["active"] == "default"
    for name, before in seen["rm_before"].items():
        torch.testing.assert_close(seen["rm_after"][name], before, rtol=0, atol=0)


@pytest.mark.slow  # a run, then a resumed run
def test_grpo_resumes_from_its_last_checkpoint(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """Kill after step 2 of 4 (checkpoints every 2): the rerun continues at 3 and ends where an unbroken run does."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(grpo_argv(tiny_argv, whole, tiny_sft_final, tiny_rm_final, *SHORT)) == 0
    assert main(grpo_argv(tiny_argv, broken, tiny_sft_final, tiny_rm_final, *SHORT)) == 0
    shutil.rmtree(broken / "final")
    shutil.rmtree(broken / "checkpoints" / "checkpoint-4")
    assert main(grpo_argv(tiny_argv, broken, tiny_sft_final, tiny_rm_final, *SHORT)) == 0
    resumed = [r for r in read_metrics(broken / "metrics.jsonl") if "reward_mean" in r]
    reference = [r for r in read_metrics(whole / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert (broken / "final" / FINAL_MARKER).is_file()
    for a, b in zip(resumed, reference):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-4)


def test_reward_functions_alone_use_no_rm(tmp_path, tiny_argv, tiny_sft_final, functions_file, caplog):
    argv = grpo_argv(
        tiny_argv, tmp_path, tiny_sft_final, "", *SHORT, f"training.reward_funcs=[{functions_file}:pleasant]"
    )
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "RANDOM RewardHead" not in caplog.text
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert all("reward/pleasant" in r and "reward/rm" not in r for r in history)
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in history)


def test_rm_and_function_are_weighted_and_logged_apart(
    tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final, functions_file
):
    argv = grpo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        tiny_rm_final,
        *SHORT,
        f"training.reward_funcs=[{functions_file}:pleasant]",
        "training.reward_weights=[2.0]",
        "training.reward_model.weight=0.5",
    )
    assert main(argv) == 0
    for r in (r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r):
        assert r["reward_mean"] == pytest.approx(0.5 * r["reward/rm"] + 2.0 * r["reward/pleasant"], abs=1e-4)


@pytest.mark.parametrize(
    ("spec", "words"),
    [("boom", "raised RuntimeError: no reward today"), ("short", "returned 1 values"), ("missing", "no function")],
)
def test_a_broken_reward_function_is_exit_2_naming_it(
    tmp_path, tiny_argv, tiny_sft_final, functions_file, capsys, spec, words
):
    argv = grpo_argv(
        tiny_argv, tmp_path, tiny_sft_final, "", *SHORT, f"training.reward_funcs=[{functions_file}:{spec}]"
    )
    assert main(argv) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "training.reward_funcs" in line]
    assert f"{functions_file}:{spec}" in line and words in line


def test_num_generations_must_divide_the_batch(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final, capsys):
    argv = grpo_argv(tiny_argv, tmp_path, tiny_sft_final, tiny_rm_final, "training.batch_size=6")
    assert main(argv) == 2
    assert "training.grpo.num_generations (4) must divide" in capsys.readouterr().err


def test_pipeline_accepts_sft_rm_grpo():
    from eulerforge_trl.stages import pipeline_chains

    assert ("sft", "rm", "grpo") in pipeline_chains()


@pytest.mark.slow  # a learning run
def test_grpo_raises_what_its_reward_function_rewards(tmp_path, tiny_argv, tiny_sft_final, functions_file):
    """Rewarded by a function alone (no RM), GRPO raises that function's value within LEARN_STEPS steps.

    Measured on 2 cores (tiny_pipeline's SFT model, lr 2e-3): 1.6 -> 3.5 in 30 steps, 19 s. At the
    preset's lr 3e-4 the same run moves little (0.50 -> 0.55): one update per batch, unlike PPO's 4 epochs.
    """
    argv = grpo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        "",
        f"training.max_steps={LEARN_STEPS}",
        "training.save_steps=100",
        "training.lr=2e-3",
        f"training.reward_funcs=[{functions_file}:pleasant_count]",
    )
    assert main(argv) == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert all(r["reward_mean"] == pytest.approx(r["reward/pleasant_count"], abs=1e-5) for r in history)
    k = LEARN_STEPS // 5
    first = sum(r["reward_mean"] for r in history[:k]) / k
    last = sum(r["reward_mean"] for r in history[-k:]) / k
    assert last > first + 0.3, f"reward_mean did not rise: {first:.2f} -> {last:.2f}"


def test_a_separate_rm_of_another_base_rewards_grpo(tmp_path, tiny_argv, tiny_sft_final, rm_on_another_base):
    """`training.reward_model.separate`: the RM runs as its own model on its own (smaller) base."""
    argv = grpo_argv(
        tiny_argv, tmp_path, tiny_sft_final, rm_on_another_base, *SHORT, "training.reward_model.separate=true"
    )
    assert main(argv) == 0
    history = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert all(r["reward_mean"] == pytest.approx(r["reward/rm"]) for r in history)
    assert len({round(r["reward_mean"], 6) for r in history}) > 1  # real scores, not a constant
