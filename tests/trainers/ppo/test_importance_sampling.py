"""Importance weights for an engine that samples off the trainer's weights (TRL GRPO's
`vllm_importance_sampling_correction`), checked against hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError
from eulerforge_trl.trainers.ppo import losses

# two responses of three tokens, the second one token shorter (its last column is padding)
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 9.0]])
ENGINE = torch.tensor([[-1.0, -3.0, -0.4], [-2.0, -1.5, -9.0]])
MASK = torch.tensor([[True, True, True], [True, True, False]])
# old - engine = [[0, 1, -0.1], [1, 0.5, (pad)]]


def test_token_truncate_caps_each_tokens_ratio():
    weights, capped = losses.importance_weights(OLD, ENGINE, MASK, "token_truncate", cap=2.0)
    # exp(0)=1, exp(1)=2.718 -> 2 (capped), exp(-0.1)=0.905; exp(1) -> 2, exp(0.5)=1.649; padding 0
    expected = torch.tensor([[1.0, 2.0, math.exp(-0.1)], [2.0, math.exp(0.5), 0.0]])
    assert torch.allclose(weights, expected)
    assert capped.tolist() == [[False, True, False], [True, False, False]]


def test_token_mask_drops_a_token_above_the_cap():
    weights, _ = losses.importance_weights(OLD, ENGINE, MASK, "token_mask", cap=2.0)
    expected = torch.tensor([[1.0, 0.0, math.exp(-0.1)], [0.0, math.exp(0.5), 0.0]])
    assert torch.allclose(weights, expected)


def test_sequence_modes_weight_a_response_by_its_summed_log_ratio():
    # row 0: 0 + 1 - 0.1 = 0.9 -> exp 2.46; row 1: 1 + 0.5 = 1.5 -> exp 4.48 (the padding's 18 ignored)
    weights, capped = losses.importance_weights(OLD, ENGINE, MASK, "sequence_truncate", cap=3.0)
    assert torch.allclose(weights, torch.tensor([[math.exp(0.9)] * 3, [3.0, 3.0, 0.0]]))
    assert capped.tolist() == [[False] * 3, [True, True, False]]
    weights, _ = losses.importance_weights(OLD, ENGINE, MASK, "sequence_mask", cap=3.0)
    assert torch.allclose(weights, torch.tensor([[math.exp(0.9)] * 3, [0.0, 0.0, 0.0]]))


def test_the_weights_scale_each_tokens_loss_and_leave_the_ratio_alone():
    """On the first pass (pi = pi_old) the ratio is exactly 1 and the loss is -mean(w * A): the weights
    are a factor of their own, without gradient, and scale each token's gradient."""
    advantages = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, 7.0]])
    weights, _ = losses.importance_weights(OLD, ENGINE, MASK, "token_truncate", cap=2.0)
    logprobs = OLD.clone().requires_grad_(True)
    loss, stats = losses.policy_loss(logprobs, OLD, advantages, MASK, 0.2, weights)
    assert stats["ratio_mean"].item() == 1.0
    # -(1*1 + 2*(-2) + 0.905*0.5 + 2*3 + 1.649*1) / 5 tokens
    expected = -(1.0 - 4.0 + math.exp(-0.1) * 0.5 + 6.0 + math.exp(0.5)) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dlogp of -w * A * exp(logp - old) at logp = old: -w * A / n; 0 on padding
    assert torch.allclose(logprobs.grad, torch.where(MASK, -weights * advantages / 5, torch.zeros(())))
    unweighted, _ = losses.policy_loss(OLD, OLD, advantages, MASK, 0.2)
    assert unweighted.item() == pytest.approx(-(1.0 - 2.0 + 0.5 + 3.0 + 1.0) / 5)  # w = 1


def test_an_unknown_mode_and_a_bad_cap_are_refused():
    with pytest.raises(ValueError, match="importance sampling mode"):
        losses.importance_weights(OLD, ENGINE, MASK, "token", cap=2.0)
    with pytest.raises(PresetError, match=r"training.ppo.importance_sampling_cap \(0.0\) must be > 0"):
        load_preset("presets/tiny_ppo.yml", ["training.ppo.importance_sampling_cap=0"])
