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
