"""PPO end to end on the shared base: SFT -> RM -> PPO through the CLI on the tiny model.

The learning test is the point of the shared-base design: reward read through the RM adapter on
the policy's own base rises while KL to the reference (adapters off) stays bounded.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from eulerforge_trl.rundir import FINAL_MARKER, read_metrics
from eulerforge_trl.train import main

LEARN_STEPS = 30


def ppo_argv(tiny_argv, out, sft_final, rm_final, *overrides):
    return tiny_argv(
        "tiny_ppo.yml",
        out,
        f"model_name={sft_final}",
        f"training.reward_model.checkpoint_path={rm_final}",
        *overrides,
    )


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory, tiny_argv, tiny_sft_final, tiny_rm_final):
    out = tmp_path_factory.mktemp("tiny_ppo")
    argv = ppo_argv(
        tiny_argv, out, tiny_sft_final, tiny_rm_final, f"training.max_steps={LEARN_STEPS}", "training.save_steps=10"
    )
    assert main(argv) == 0
    return out


@pytest.mark.slow  # a learning run
def test_ppo_raises_reward_with_bounded_kl(ppo_run):
    before, *history = read_metrics(ppo_run / "metrics.jsonl")
    assert before["step"] == 0 and before["score_norm_samples"] > 0  # the score scale, before step 1
    assert [r["step"] for r in history] == list(range(1, LEARN_STEPS + 1))
    k = LEARN_STEPS // 5  # first and last 20% of the steps: the reward is noisy step to step
    first = sum(r["reward_mean"] for r in history[:k]) / k
    last = sum(r["reward_mean"] for r in history[-k:]) / k
    assert last > first + 1.0, f"reward_mean did not rise: {first:.2f} -> {last:.2f}"
    assert history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert max(r["kl_divergence"] for r in history) < 15.0
    for key in (
        "ppo_loss",
        "value_loss",
        "entropy",
        "clipfrac",
        "approx_kl",
        "response_length",
        "no_eos_fraction",
        "time_generate",
        "time_score",
        "time_train",
        "tokens_per_second",
    ):
        assert all(key in r for r in history), key


@pytest.mark.slow  # a learning run
def test_ppo_writes_final_samples_and_plot(ppo_run, tiny_sft_final):
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    final = ppo_run / "final"
    assert json.loads((final / FINAL_MARKER).read_text())["stage"] == "ppo"
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.pt", "preset.yml", "tokenizer.json"):
        assert (final / name).is_file(), name
    assert (ppo_run / "training_curves.png").stat().st_size > 1000
    samples = [json.loads(line) for line in (ppo_run / "samples.jsonl").read_text().splitlines()]
    assert {"step", "prompt", "response", "reward"} <= set(samples[0])
    # final/ loads as a model (policy adapter merged onto the SFT base) and differs from the SFT model
    tokenizer = load_tokenizer(str(final))
    policy = load_causal_lm(str(final), tokenizer=tokenizer)
    sft = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer)
    ids = tokenizer(["Describe the cat near the park.\nAnswer:"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(policy(ids).logits, sft(ids).logits)


@pytest.mark.slow  # a run, then a resumed run
def test_ppo_resumes_from_its_last_checkpoint(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final):
    """Kill after step 4 of 6 (checkpoints every 2): the rerun continues at 4 and ends where an unbroken run does."""
    args = ("training.max_steps=6", "training.save_steps=2", "training.batch_size=8", "training.ppo.max_gen_len=12")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(ppo_argv(tiny_argv, whole, tiny_sft_final, tiny_rm_final, *args)) == 0
    assert main(ppo_argv(tiny_argv, broken, tiny_sft_final, tiny_rm_final, *args)) == 0
    # simulate a kill during step 5: the last checkpoint is 4, steps 5-6 logged nothing final
    shutil.rmtree(broken / "final")
    shutil.rmtree(broken / "checkpoints" / "checkpoint-6")
    assert main(ppo_argv(tiny_argv, broken, tiny_sft_final, tiny_rm_final, *args)) == 0
    resumed, reference = read_metrics(broken / "metrics.jsonl"), read_metrics(whole / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4, 5, 6]
    for a, b in zip(resumed[1:], reference[1:]):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-4)
        assert a["ppo_loss"] == pytest.approx(b["ppo_loss"], abs=1e-4)


def test_empty_reward_checkpoint_runs_with_a_loud_warning(tmp_path, tiny_argv, tiny_sft_final, caplog):
    argv = ppo_argv(
        tiny_argv,
        tmp_path,
        tiny_sft_final,
        "",
        "training.max_steps=1",
        "training.batch_size=4",
        "training.ppo.save_merged=true",
        "training.lr=1e-2",
    )
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "RANDOM RewardHead" in caplog.text
    # save_merged: final/merged is the policy adapter merged into the base, the same model as final/
    from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "final"))
    ids = tokenizer(["Describe the cat near the park.\nAnswer:"], return_tensors="pt").input_ids
    with torch.no_grad():
        merged = load_causal_lm(str(tmp_path / "final" / "merged"), tokenizer=tokenizer)(ids).logits
        adapter = load_causal_lm(str(tmp_path / "final"), tokenizer=tokenizer)(ids).logits
        sft = load_causal_lm(str(tiny_sft_final), tokenizer=tokenizer)(ids).logits
    torch.testing.assert_close(merged, adapter, atol=1e-5, rtol=0)
    assert not torch.allclose(merged, sft, atol=1e-4), "one PPO step at lr 1e-2 must move the policy"


def test_rm_of_another_base_is_exit_2_with_both_sizes(tmp_path, tiny_argv, tiny_sft_final, capsys):
    """An RM trained on a hidden-64 model cannot score a hidden-128 policy: one clear line, exit 2."""
    from transformers import AutoModelForCausalLM

    from eulerforge_trl.models.loading import load_tokenizer
    from eulerforge_trl.models.tiny import tiny_config

    tokenizer = load_tokenizer("tiny-qwen3.5")
    config = tiny_config(len(tokenizer))
    config.hidden_size, config.intermediate_size = 64, 192
    other_base = tmp_path / "other_base"
    AutoModelForCausalLM.from_config(config).save_pretrained(other_base)
    tokenizer.save_pretrained(other_base)
    rm_argv = tiny_argv("tiny_rm.yml", tmp_path / "other_rm", f"model_name={other_base}", "training.max_steps=2")
    assert main(rm_argv) == 0
    capsys.readouterr()
    argv = ppo_argv(
        tiny_argv, tmp_path / "ppo", tiny_sft_final, tmp_path / "other_rm" / "final", "training.max_steps=1"
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "hidden_size=64" in err[0] and "hidden_size=128" in err[0]
    assert not (tmp_path / "ppo" / "final").exists()


def test_reward_model_name_must_be_the_policy_base(tmp_path, tiny_argv, tiny_sft_final, tiny_rm_final, capsys):
    argv = ppo_argv(tiny_argv, tmp_path, tiny_sft_final, tiny_rm_final, "training.reward_model.model_name=tiny-qwen3.5")
    assert main(argv) == 2
    assert "training.reward_model.model_name" in capsys.readouterr().err
