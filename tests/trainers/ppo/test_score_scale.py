"""The score scale: mean/std of the SFT policy's rewards, std 1 (and a warning) when they do not vary.

The old clamp `std.clamp(min=1e-6)` turned a sparse reward that every SFT sample missed into a
normalised score of ~1e6 for the first success.
"""

from __future__ import annotations

import math

import pytest
import torch

from eulerforge_trl.trainers.ppo.score_scale import RELATIVE_FLOOR, score_scale


def test_mean_and_biased_std():
    # mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / 4 = 1.25
    scale = score_scale([1.0, 2.0, 3.0, 4.0])
    assert scale.mean == pytest.approx(2.5) and scale.std == pytest.approx(math.sqrt(1.25))
    assert scale.warning is None


def test_a_tensor_as_the_trainer_gathers_it():
    scores = torch.tensor([0.5, -1.5, 2.0])
    scale = score_scale(scores)
    assert scale.mean == pytest.approx(scores.mean().item())
    assert scale.std == pytest.approx(scores.std(unbiased=False).item())


def test_a_sparse_reward_every_sft_sample_missed_falls_back_to_std_one():
    scale = score_scale([0.0] * 64)
    assert (scale.mean, scale.std) == (0.0, 1.0)
    assert "score_norm_samples" in scale.warning and "\n" not in scale.warning
    first_success = (1.0 - scale.mean) / scale.std
    assert first_success == 1.0  # not 1e6


def test_float_noise_around_a_large_mean_is_no_spread():
    noise = [1000.0 + 1e-3 * (i % 2) for i in range(16)]  # std 5e-4 < 1e-4 * 1000
    scale = score_scale(noise)
    assert scale.std == 1.0 and scale.mean == pytest.approx(1000.0005) and scale.warning


def test_a_small_but_real_spread_is_kept():
    scale = score_scale([0.0, 0.01])  # std 0.005, well above 1e-4
    assert scale.std == pytest.approx(0.005) and scale.warning is None
    assert RELATIVE_FLOOR < 0.005


@pytest.mark.parametrize("scores", [[], [3.0]])
def test_too_few_samples(scores):
    scale = score_scale(scores)
    assert scale.std == 1.0 and scale.warning


def test_the_trainer_falls_back_to_std_1_on_a_reward_that_never_varies(tmp_path, caplog):
    """A reward function that scores every SFT sample 0: the trainer normalises by std 1, says so."""
    import logging

    from eulerforge_trl.config import load_preset
    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    (tmp_path / "rewards.py").write_text(
        "def never(prompts, completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    (tmp_path / "prompts.jsonl").write_text("".join(f'{{"prompt": "Tell me about cat {i}."}}\n' for i in range(8)))
    preset = load_preset(
        "tiny_ppo.yml",
        [
            "model_name=tiny-qwen3.5",
            "training.reward_model.checkpoint_path=",
            f"training.reward_funcs=[{tmp_path / 'rewards.py'}:never]",
            f"data.path={tmp_path / 'prompts.jsonl'}",
            "training.batch_size=4",
            "training.report_to=[]",
            "training.ppo.max_gen_len=4",
            "training.ppo.score_norm_samples=8",
        ],
        output_dir=str(tmp_path / "out"),
    )
    RunDir(tmp_path / "out").root.mkdir(parents=True)
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    with caplog.at_level(logging.WARNING):
        logged = trainer.ensure_score_scale()
    assert logged["score_norm_std"] == 1.0 and trainer.scale.stats == (0.0, 1.0)
    assert any("normalising by std 1" in r.getMessage() for r in caplog.records)
