"""KL control: the adaptive coefficient (Ziegler et al.), score clipping, both through the trainer."""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.config.stage_sections import PPOSection
from eulerforge_trl.trainers.ppo.kl_control import KLController
from eulerforge_trl.trainers.ppo.targets import ppo_targets


def test_the_coefficient_moves_toward_the_target_and_the_step_is_clipped():
    kl = KLController(0.1, target=4.0, horizon=100)
    kl.update(current_kl=6.0, samples=10)  # error 0.5 -> clipped to 0.2: beta * (1 + 0.2 * 10 / 100)
    assert kl.value == pytest.approx(0.1 * 1.02)
    kl.update(current_kl=3.0, samples=10)  # error -0.25 -> -0.2
    assert kl.value == pytest.approx(0.1 * 1.02 * 0.98)
    kl.update(current_kl=4.4, samples=50)  # error 0.1: beta * 1.05
    assert kl.value == pytest.approx(0.1 * 1.02 * 0.98 * 1.05)
    fixed = KLController(0.1)
    fixed.update(current_kl=100.0, samples=1000)
    assert fixed.value == 0.1


def test_scores_are_clipped_before_the_kl_shaping():
    cfg = PPOSection(score_clip=2.0, kl_coef=0.0, missing_eos_penalty=None, gamma=1.0, lam=1.0)
    mask = torch.ones(2, 3, dtype=torch.bool)
    zeros = torch.zeros(2, 3)
    args = (torch.tensor([True, True]), mask, zeros, zeros, zeros)
    clipped = ppo_targets(torch.tensor([10.0, -1.0]), *args, cfg)
    plain = ppo_targets(
        torch.tensor([2.0, -1.0]), *args, PPOSection(kl_coef=0.0, missing_eos_penalty=None, gamma=1.0, lam=1.0)
    )
    assert torch.allclose(clipped.returns, plain.returns)  # 10 counted as 2
    assert clipped.returns[0, 0] == pytest.approx(2.0) and clipped.returns[1, 0] == pytest.approx(-1.0)


def test_the_trainer_adapts_logs_and_checkpoints_the_coefficient(tmp_path):
    from eulerforge_trl.rundir import RunDir, read_metrics
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    from .test_ppo_trainer import tiny_ppo_preset

    preset = tiny_ppo_preset(
        tmp_path,
        "training.max_steps=3",
        "training.save_steps=3",
        "training.lr=1e-2",
        "training.ppo.kl_coef=0.1",
        "training.ppo.target_kl=1e-3",  # far below what 3 steps at lr 1e-2 reach: beta must grow
        "training.ppo.kl_horizon=10",
    )
    RunDir(tmp_path / "out").root.mkdir(parents=True)
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    trainer.train()
    history = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "kl_coef" in r]
    assert history[0]["kl_coef"] == 0.1  # step 1 uses the start value
    expected = 0.1
    for record in history:
        assert record["kl_coef"] == pytest.approx(expected)
        error = min(max(record["kl_divergence"] / 1e-3 - 1, -0.2), 0.2)
        expected *= 1 + error * 4 / 10  # batch 4, one process
    resumed = PPOTrainer(preset, RunDir(tmp_path / "out"))
    resumed.load_checkpoint(tmp_path / "out" / "checkpoints" / "checkpoint-3")
    assert resumed.kl.value == pytest.approx(trainer.kl.value) and trainer.kl.value != 0.1


def test_with_the_kl_in_the_loss_the_rewards_are_the_score_alone():
    mask = torch.ones(1, 3, dtype=torch.bool)
    logprobs, ref = torch.tensor([[-1.0, -1.0, -1.0]]), torch.tensor([[-2.0, -2.0, -2.0]])
    common = dict(kl_coef=0.5, kl_estimator="k3", missing_eos_penalty=None, gamma=1.0, lam=1.0)
    args = (torch.tensor([1.0]), torch.tensor([True]), mask, logprobs, ref, torch.zeros(1, 3))
    in_loss = ppo_targets(*args, PPOSection(use_kl_loss=True, **common))
    in_reward = ppo_targets(*args, PPOSection(**common))
    assert torch.allclose(in_loss.returns, torch.ones(1, 3))  # gamma = lam = 1: every return is the score
    assert (in_reward.returns < 1.0).all()  # the KL penalty was subtracted
    assert torch.allclose(in_loss.kl, in_reward.kl) and (in_loss.kl > 0).all()  # still measured
    assert torch.equal(in_loss.ref_logprobs, ref)


def test_use_kl_loss_refuses_the_k1_estimator(tmp_path):
    from eulerforge_trl.errors import PresetError

    from .test_ppo_trainer import tiny_ppo_preset

    with pytest.raises(PresetError, match="training.ppo.use_kl_loss needs training.ppo.kl_estimator"):
        tiny_ppo_preset(tmp_path, "training.ppo.use_kl_loss=true")


def test_the_kl_loss_holds_the_policy_near_the_reference(tmp_path):
    """Same runs, the KL coefficient in the loss at 0 and at 20. With the KL in the loss the rewards
    ignore the coefficient, so only the loss term can tell them apart: the policy's KL to the
    reference during the updates (`kl_loss`, k3 per token) must be much lower with 20."""
    from eulerforge_trl.rundir import RunDir, read_metrics
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    from .test_ppo_trainer import tiny_ppo_preset

    kl_during_updates = {}
    for coef in (0.0, 20.0):
        out = tmp_path / f"coef{coef}"
        preset = tiny_ppo_preset(
            tmp_path,
            "training.max_steps=2",
            "training.lr=5e-3",
            "training.lr_scheduler=constant",
            "training.ppo.epochs=4",
            "training.ppo.use_kl_loss=true",
            "training.ppo.kl_estimator=k3",
            f"training.ppo.kl_coef={coef}",
        )
        RunDir(out).root.mkdir(parents=True)
        PPOTrainer(preset, RunDir(out)).train()
        records = [r for r in read_metrics(out / "metrics.jsonl") if "kl_loss" in r]
        assert len(records) == 2
        kl_during_updates[coef] = sum(r["kl_loss"] for r in records)
    assert kl_during_updates[20.0] < 0.5 * kl_during_updates[0.0], kl_during_updates
