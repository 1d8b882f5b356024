"""Unit tests for the pure PPO maths. Expected numbers are derived by hand in the comments."""

import math

import pytest
import torch

from eulerforge_trl.trainers.ppo.losses import (
    compute_gae,
    kl_per_token,
    masked_mean,
    masked_var,
    masked_whiten,
    penalize_missing_eos,
    policy_loss,
    shape_rewards,
    value_loss,
)

D = torch.float64
BIG = 1e9


def t(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=D), torch.as_tensor(expected, dtype=D), atol=atol, rtol=0)


# Valid entries: 1, 2, 3 | 4. Padding is huge (or inf) and must be ignored.
VALUES = t([[1.0, 2.0, 3.0], [4.0, BIG, -BIG]])
MASK = t([[1, 1, 1], [1, 0, 0]], dtype=torch.long)


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_ignores_padding():
    close(masked_mean(VALUES, MASK), (1 + 2 + 3 + 4) / 4)  # 2.5
    close(masked_mean(VALUES, MASK, dim=1), [2.0, 4.0])  # (1+2+3)/3, 4/1
    inf_pad = t([[1.0, 2.0, 3.0], [4.0, math.inf, math.nan]])
    close(masked_mean(inf_pad, MASK.bool()), 2.5)


def test_masked_mean_all_masked_is_zero_not_nan():
    close(masked_mean(VALUES, torch.zeros_like(MASK)), 0.0)


def test_masked_var_ignores_padding():
    # Deviations from 2.5: -1.5, -0.5, 0.5, 1.5 -> squares sum to 2.25+0.25+0.25+2.25 = 5.
    close(masked_var(VALUES, MASK), 5 / 4)  # biased
    close(masked_var(VALUES, MASK, unbiased=True), 5 / 3)
    with pytest.raises(ValueError):
        masked_var(VALUES, t([[1, 0, 0], [0, 0, 0]]), unbiased=True)


def test_masked_whiten_ignores_padding_and_zeroes_it():
    std = math.sqrt(1.25 + 1e-8)
    out = masked_whiten(VALUES, MASK)
    close(out, [[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]])
    close(masked_mean(out, MASK), 0.0)
    close(masked_var(out, MASK), 1.0, atol=1e-6)
    # shift_mean=False keeps the mean 2.5 on valid entries; padding is still 0.
    kept = masked_whiten(VALUES, MASK, shift_mean=False)
    close(kept, [[2.5 - 1.5 / std, 2.5 - 0.5 / std, 2.5 + 0.5 / std], [2.5 + 1.5 / std, 0.0, 0.0]])


# ---------------------------------------------------------------- KL


# r = logp - logp_ref. Token 0: p=.5, p_ref=.25 -> r = ln2. Token 1: p=.25, p_ref=.5 -> r = -ln2.
LOGP = t([[math.log(0.5), math.log(0.25)]])
REF = t([[math.log(0.25), math.log(0.5)]])
LN2 = math.log(2)


@pytest.mark.parametrize(
    "estimator, expected",
    [
        ("k1", [LN2, -LN2]),  # r
        ("k2", [0.5 * LN2**2, 0.5 * LN2**2]),  # 0.5 r^2 = 0.240227
        # exp(-r) - 1 + r: 0.5 - 1 + ln2 = 0.193147 ; 2 - 1 - ln2 = 0.306853
        ("k3", [0.5 - 1 + LN2, 2 - 1 - LN2]),
    ],
)
def test_kl_estimators(estimator, expected):
    close(kl_per_token(LOGP, REF, estimator), [expected])


def test_kl_unknown_estimator():
    with pytest.raises(ValueError):
        kl_per_token(LOGP, REF, "k4")


# ---------------------------------------------------------------- reward shaping


def test_shape_rewards_places_score_at_last_valid_token():
    scores = t([10.0, 20.0, 30.0])
    logprobs = t([[0.1, 0.2, 0.3], [0.4, 0.5, 99.0], [7.0, 8.0, 9.0]])  # row 1 pos 2 and row 2 are padding
    ref = torch.zeros_like(logprobs)
    mask = t([[1, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.long)
    rewards, kl = shape_rewards(scores, logprobs, ref, mask, kl_coef=0.5)
    # k1 = logp - 0 on valid tokens; positive KL -> negative reward -0.5 * kl.
    close(kl, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.0], [0.0, 0.0, 0.0]])
    close(
        rewards,
        [
            [-0.05, -0.10, -0.15 + 10.0],  # score 10 at index 2 (3 valid tokens)
            [-0.20, -0.25 + 20.0, 0.0],  # score 20 at index 1 (2 valid tokens)
            [0.0, 0.0, 0.0],  # all-masked row: score 30 dropped, no crash
        ],
    )


def test_shape_rewards_estimator_and_bool_mask():
    rewards, kl = shape_rewards(t([1.0]), LOGP, REF, torch.tensor([[True, True]]), kl_coef=1.0, estimator="k3")
    close(kl, [[0.5 - 1 + LN2, 2 - 1 - LN2]])
    close(rewards, [[-(0.5 - 1 + LN2), -(2 - 1 - LN2) + 1.0]])


# ---------------------------------------------------------------- GAE

REW3 = [1.0, 2.0, 3.0]
VAL3 = [0.5, 1.0, 1.5]


def test_gae_gamma1_lam1_is_returns_to_go_minus_values():
    adv, ret = compute_gae(t([REW3]), t([VAL3]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    # returns-to-go: 1+2+3=6, 2+3=5, 3 ; advantages = rtg - V = 5.5, 4.0, 1.5
    close(ret, [[6.0, 5.0, 3.0]])
    close(adv, [[5.5, 4.0, 1.5]])


def test_gae_hand_numbers_and_padding_ignored():
    # gamma=0.9, lam=0.8 -> gamma*lam = 0.72
    # delta2 = 3 + 0 - 1.5 = 1.5 ; delta1 = 2 + 0.9*1.5 - 1 = 2.35 ; delta0 = 1 + 0.9*1 - 0.5 = 1.4
    # A2 = 1.5 ; A1 = 2.35 + 0.72*1.5 = 3.43 ; A0 = 1.4 + 0.72*3.43 = 3.8696
    # R = A + V = 4.3696, 4.43, 3.0
    exp_adv, exp_ret = [3.8696, 3.43, 1.5], [4.3696, 4.43, 3.0]
    adv, ret = compute_gae(t([REW3]), t([VAL3]), t([[1, 1, 1]]), gamma=0.9, lam=0.8)
    close(adv, [exp_adv])
    close(ret, [exp_ret])
    # Same sequence followed by a padded token with garbage reward/value: V after EOS must be 0.
    adv, ret = compute_gae(t([REW3 + [1e6]]), t([VAL3 + [-1e6]]), t([[1, 1, 1, 0]]), gamma=0.9, lam=0.8)
    close(adv, [exp_adv + [0.0]])
    close(ret, [exp_ret + [0.0]])


def _naive_gae(rewards, values, length, gamma, lam):
    """A_t = sum_l (gamma*lam)^l delta_{t+l} with V(after last) = 0, written as a double loop."""
    deltas = []
    for i in range(length):
        next_v = values[i + 1] if i + 1 < length else 0.0
        deltas.append(rewards[i] + gamma * next_v - values[i])
    adv = [sum((gamma * lam) ** (j - i) * deltas[j] for j in range(i, length)) for i in range(length)]
    return adv, [a + v for a, v in zip(adv, values[:length], strict=True)]


def test_gae_matches_naive_reference_with_garbage_padding():
    g = torch.Generator().manual_seed(0)
    B, T, gamma, lam = 4, 6, 0.95, 0.9
    lengths = [6, 3, 1, 0]
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    rewards = torch.randn(B, T, generator=g, dtype=D)
    values = torch.randn(B, T, generator=g, dtype=D)
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)

    garbage = torch.randn(B, T, generator=g, dtype=D) * 1e3
    adv2, ret2 = compute_gae(torch.where(mask, rewards, garbage), torch.where(mask, values, -garbage), mask, gamma, lam)
    close(adv2, adv)
    close(ret2, ret)

    exp_adv, exp_ret = torch.zeros(B, T, dtype=D), torch.zeros(B, T, dtype=D)
    for b, n in enumerate(lengths):
        a, r = _naive_gae(rewards[b].tolist(), values[b].tolist(), n, gamma, lam)
        exp_adv[b, :n], exp_ret[b, :n] = t(a), t(r)
    close(adv, exp_adv)
    close(ret, exp_ret)


# ---------------------------------------------------------------- policy loss


def test_policy_loss_no_change_is_minus_mean_advantage():
    logp = t([[-1.0, -2.0, -3.0], [-0.5, 5.0, 5.0]])
    adv = t([[1.0, -2.0, 3.0], [4.0, 9.0, 9.0]])
    loss, stats = policy_loss(logp, logp.clone(), adv, MASK, clip_range=0.2)
    close(loss, -(1 - 2 + 3 + 4) / 4)  # ratio == 1 -> -mean(A) = -1.5
    assert stats["ratio_mean"].item() == 1.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())


def test_policy_loss_clipping_hand_example():
    # c = 0.2, bounds [0.8, 1.2]; last token is padding with garbage.
    ratios = [1.5, 0.5, 0.5, 1.1]
    old = t([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    logp = old + t([[math.log(r) for r in ratios] + [50.0]])
    adv = t([[1.0, -1.0, 1.0, 2.0, 1e6]])
    mask = t([[1, 1, 1, 1, 0]])
    # tok0 A=1,  r=1.5: -1.5 vs -1.2 -> -1.2 (clipped)
    # tok1 A=-1, r=0.5:  0.5 vs  0.8 ->  0.8 (clipped)
    # tok2 A=1,  r=0.5: -0.5 vs -0.8 -> -0.5
    # tok3 A=2,  r=1.1: -2.2 vs -2.2 -> -2.2 (inside range, not clipped)
    loss, stats = policy_loss(logp, old, adv, mask, clip_range=0.2)
    close(loss, (-1.2 + 0.8 - 0.5 - 2.2) / 4)  # -0.775
    close(stats["clipfrac"], 2 / 4)
    close(stats["ratio_mean"], (1.5 + 0.5 + 0.5 + 1.1) / 4)  # 0.9
    close(stats["approx_kl"], 0.5 * sum(math.log(r) ** 2 for r in ratios) / 4)  # ~0.141799


# ---------------------------------------------------------------- value loss


def test_value_loss_hand_example():
    # c = 0.2; last token is padding with garbage.
    old = t([[1.0, 1.0, 0.0, 0.0, 7.0]])
    values = t([[1.5, 1.1, -0.5, 1.0, -1e6]])
    returns = t([[2.0, 0.0, -1.0, 0.0, 1e6]])
    mask = t([[1, 1, 1, 1, 0]])
    # tok0: (1.5-2)^2=0.25 ; clipped v=1.2 -> (1.2-2)^2=0.64  -> 0.64 (clipped)
    # tok1: (1.1-0)^2=1.21 ; clipped v=1.1 -> 1.21            -> 1.21
    # tok2: (-0.5+1)^2=0.25; clipped v=-0.2 -> (0.8)^2=0.64    -> 0.64 (clipped)
    # tok3: (1-0)^2=1.0    ; clipped v=0.2 -> 0.04             -> 1.0
    loss, stats = value_loss(values, old, returns, mask, clip_range_value=0.2)
    close(loss, 0.5 * (0.64 + 1.21 + 0.64 + 1.0) / 4)  # 0.43625
    close(stats["value_clipfrac"], 2 / 4)


# ---------------------------------------------------------------- gradients


def test_gradients_flow_and_are_zero_at_masked_positions():
    mask = t([[1, 1, 0], [1, 0, 0]])
    n_valid = 3
    # Garbage padding that would overflow exp() / produce nan if it leaked.
    logp = t([[-1.0, -2.0, 1e4], [-0.5, -1e4, 1e4]]).requires_grad_()
    old = t([[-1.0, -2.0, -1e4], [-0.5, 1e4, 0.0]])
    adv = t([[1.0, -2.0, 1e9], [3.0, 1e9, 1e9]])
    loss, _ = policy_loss(logp, old, adv, mask, clip_range=0.2)
    loss.backward()
    # ratio == 1 (unclipped): d loss / d logp_t = -A_t * ratio_t / n_valid
    close(logp.grad, [[-1.0 / n_valid, 2.0 / n_valid, 0.0], [-3.0 / n_valid, 0.0, 0.0]])

    values = t([[0.5, 1.0, 1e4], [2.0, -1e4, 1e4]]).requires_grad_()
    returns = t([[1.5, 0.0, -1e4], [1.0, 1e4, 0.0]])
    loss, _ = value_loss(values, values.detach().clone(), returns, mask, clip_range_value=0.2)
    loss.backward()
    # values == old (unclipped): d/dv 0.5 * mean((v - R)^2) = (v - R) / n_valid
    close(values.grad, [[-1.0 / n_valid, 1.0 / n_valid, 0.0], [1.0 / n_valid, 0.0, 0.0]])


# ---------------------------------------------------------------------------- missing EOS


def test_missing_eos_subtract_keeps_the_score_minus_the_penalty():
    scores, eos = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([True, False, False])
    out = penalize_missing_eos(scores, eos, 1.0, "subtract")
    torch.testing.assert_close(out, torch.tensor([2.0, -2.0, -0.5]))


def test_missing_eos_replace_drops_the_rm_score():
    """N+ detail: a cut-off answer's RM score is meaningless; it gets -penalty whatever the RM said."""
    scores, eos = torch.tensor([2.0, 3.0, -4.0]), torch.tensor([True, False, False])
    out = penalize_missing_eos(scores, eos, 1.5, "replace")
    torch.testing.assert_close(out, torch.tensor([2.0, -1.5, -1.5]))


def test_no_missing_eos_penalty_leaves_scores_alone():
    scores = torch.tensor([1.0, 2.0])
    assert penalize_missing_eos(scores, torch.tensor([False, False]), None, "replace") is scores
