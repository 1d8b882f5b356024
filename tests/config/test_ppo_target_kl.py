"""The shipped PPO presets steer their KL to a stated target, and `--explain` says how to pick one."""

from __future__ import annotations

import pytest

from eulerforge_trl.config import load_preset
from eulerforge_trl.config.explain import explain


@pytest.mark.parametrize("name", ["tiny_ppo.yml", "smollm2_135m_lora_ppo.yml", "smollm2_135m_lora_ppo_math.yml"])
def test_ppo_presets_ship_a_target_kl_the_controller_can_reach_in_their_steps(name):
    ppo = load_preset(name).training
    assert ppo.ppo.target_kl is not None and ppo.ppo.target_kl > 0
    # a step moves kl_coef by up to 20% x samples / kl_horizon: near the samples per step, a run of a
    # few dozen steps can correct a KL error (the default 10000 would move it 0.3% a step)
    assert ppo.ppo.kl_horizon <= ppo.batch_size


def test_explain_target_kl_says_which_target_to_pick():
    text = explain("training.ppo.target_kl")
    assert "Which target" in text and "last 10% of steps" in text and "kl_horizon" in text
