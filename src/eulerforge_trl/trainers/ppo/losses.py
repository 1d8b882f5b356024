"""Pure PPO maths for RLHF: masked statistics, KL reward shaping, GAE and clipped losses.

Every tensor is over response tokens only, shape ``[B, T]`` (right-padded). ``mask`` is a bool or
0/1 tensor ``[B, T]`` that is 1 for real response tokens up to and including the first EOS and 0
for padding. Values at masked positions are treated as garbage: they never reach the outputs or
the gradients (inputs are zeroed with ``torch.where`` rather than multiplied, so even
``inf``/``nan`` padding is harmless).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "kl_per_token",
    "shape_rewards",
    "compute_gae",
    "importance_weights",
    "policy_loss",
    "value_loss",
]

KL_ESTIMATORS = ("k1", "k2", "k3")
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def _zero_pad(values: Tensor, mask: Tensor) -> Tensor:
    """Replaces entries where ``mask`` is 0 by 0 (no ``0 * inf = nan``, no gradient leak)."""
    return torch.where(mask.bool(), values, torch.zeros_like(values))


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1.

    Args:
        values: ``[B, T]`` tensor.
        mask: ``[B, T]`` bool or 0/1 tensor.
        dim: Reduce along this dim only; ``None`` reduces over all entries.

    Returns:
        0-d tensor, or ``values`` with ``dim`` reduced. Empty selections give 0 instead of nan,
        so a batch of all-padding rows does not poison the loss.
    """
    mask = mask.bool()
    total = _zero_pad(values, mask).sum() if dim is None else _zero_pad(values, mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = False) -> Tensor:
    """Variance of ``values`` over valid entries (all dims).

    Biased by default, as in "The N Implementation Details of RLHF with PPO", since it only
    scales whitened rewards/advantages.

    Args:
        values: ``[B, T]`` tensor.
        mask: ``[B, T]`` bool or 0/1 tensor.
        unbiased: Apply Bessel's correction ``n / (n - 1)``.

    Returns:
        0-d tensor.

    Raises:
        ValueError: ``unbiased`` with fewer than two valid entries.
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.bool().sum()
        if n < 2:
            raise ValueError(f"Unbiased variance needs at least 2 valid entries, got {int(n)}.")
        var = var * n / (n - 1)
    return var


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalises valid entries to unit variance (and zero mean if ``shift_mean``).

    Args:
        values: ``[B, T]`` tensor.
        mask: ``[B, T]`` bool or 0/1 tensor.
        shift_mean: If False the mean is added back, as done for rewards so that the KL-shaped
            reward keeps its sign/level while its scale is normalised.

    Returns:
        ``[B, T]`` tensor, 0 where ``mask`` is 0.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_pad(whitened, mask)


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (Schulman's k1/k2/k3).

    k1 is unbiased but can be negative; k2 and k3 are always >= 0 (k3 is unbiased, k2 is
    low-variance but biased).

    Args:
        logprobs: ``[B, T]`` log pi(token).
        ref_logprobs: ``[B, T]`` log pi_ref(token).
        estimator: One of ``"k1"``, ``"k2"``, ``"k3"``.

    Returns:
        ``[B, T]`` tensor (not masked).

    Raises:
        ValueError: Unknown ``estimator``.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # exp(-r) - 1 - (-r)
    raise ValueError(f"Unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}.")


def shape_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Builds per-token rewards: a KL penalty on every token plus the sequence score at the end.

    Args:
        scores: ``[B]`` reward-model score of each sequence.
        logprobs: ``[B, T]`` policy log-probs of the sampled tokens.
        ref_logprobs: ``[B, T]`` reference-model log-probs of the same tokens.
        mask: ``[B, T]`` bool or 0/1 tensor.
        kl_coef: Weight of the KL penalty.
        estimator: KL estimator, see :func:`kl_per_token`.

    Returns:
        ``(rewards, kl)``, both ``[B, T]`` and 0 outside ``mask``. ``scores[b]`` is added at the
        last valid token of row ``b`` (``mask.sum(1) - 1``); rows with no valid token get nothing.
    """
    mask = mask.bool()
    kl = _zero_pad(kl_per_token(logprobs, ref_logprobs, estimator), mask)
    last = mask.sum(1) - 1  # [B], -1 for empty rows
    has_token = (last >= 0).to(kl.dtype)
    at_last = F.one_hot(last.clamp(min=0), kl.shape[1]).to(kl.dtype) * has_token[:, None]
    rewards = -kl_coef * kl + at_last * scores.to(kl.dtype)[:, None]
    return rewards, kl


def penalize_missing_eos(scores: Tensor, contains_eos: Tensor, penalty: float | None, mode: str = "subtract") -> Tensor:
    """Scores of responses that never reached EOS, cut off at `max_gen_len`.

    Their RM score was read at a token the RM never saw as a last one. ``"subtract"`` (TRL's
    `missing_eos_penalty`) keeps it minus ``penalty``; ``"replace"`` (the "N+ implementation
    details" choice) drops it for ``-penalty``. ``penalty=None`` leaves every score as it is.

    Args:
        scores: ``[B]`` (normalised) sequence scores.
        contains_eos: ``[B]`` bool, whether the response ended with EOS.
    """
    if penalty is None:
        return scores
    if mode == "replace":
        return torch.where(contains_eos, scores, torch.full_like(scores, -penalty))
    if mode == "subtract":
        return scores - penalty * (~contains_eos).to(scores.dtype)
    raise ValueError(f"Unknown missing-EOS mode {mode!r}; expected 'subtract' or 'replace'.")


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation over response tokens.

    The episode ends at the last valid token (EOS), so the bootstrap value after it is 0.
    Rewards/values outside ``mask`` are treated as 0 and never leak into valid positions.
    Call under ``torch.no_grad()`` (or detach) when used as PPO targets.

    Args:
        rewards: ``[B, T]`` per-token rewards (e.g. from :func:`shape_rewards`).
        values: ``[B, T]`` value-head predictions.
        mask: ``[B, T]`` bool or 0/1 tensor.
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[B, T]`` and 0 outside ``mask``;
        ``returns = advantages + values`` on valid positions.
    """
    mask = mask.bool()
    rewards, values = _zero_pad(rewards, mask), _zero_pad(values, mask)
    m = mask.to(values.dtype)
    T = values.shape[1]
    last_gae = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * m[:, t]
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages, advantages + values


def importance_weights(
    old_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, mode: str = "token_truncate", cap: float = 3.0
) -> tuple[Tensor, Tensor]:
    """Truncated (or masked) importance weights for tokens an engine sampled from a distribution a
    little off the trainer's (bf16 weights, other kernels): TRL GRPO's `vllm_importance_sampling_correction`.

    The ratio is ``pi_old / pi_engine = exp(old_logprobs - engine_logprobs)``, per token or, in the
    ``sequence_*`` modes, per sequence (the sum of the token log-ratios). ``*_truncate`` caps it at
    ``cap``; ``*_mask`` sets a ratio above ``cap`` to 0 (the token or sequence is dropped).

    Args:
        old_logprobs: ``[B, T]`` the trainer's log pi_old of the sampled tokens.
        engine_logprobs: ``[B, T]`` the engine's log-prob of the same tokens.
        mask: ``[B, T]`` bool or 0/1 tensor.
        mode: One of ``IS_MODES``.
        cap: Upper bound of the ratio (> 0).

    Returns:
        ``(weights, capped)``, both ``[B, T]`` without gradients: the weights (0 on padding) and where
        the ratio exceeded ``cap``.

    Raises:
        ValueError: Unknown ``mode``.
    """
    if mode not in IS_MODES:
        raise ValueError(f"Unknown importance sampling mode {mode!r}; expected one of {IS_MODES}.")
    mask = mask.bool()
    with torch.no_grad():
        log_ratio = _zero_pad(old_logprobs - engine_logprobs, mask)
        if mode.startswith("sequence"):
            log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(mask)
        ratio = torch.exp(log_ratio)
        capped = mask & (ratio > cap)
        weights = ratio.clamp(max=cap) if mode.endswith("truncate") else ratio.masked_fill(capped, 0.0)
        return _zero_pad(weights, mask), capped


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss (to minimise).

    Args:
        logprobs: ``[B, T]`` current policy log-probs (requires grad).
        old_logprobs: ``[B, T]`` log-probs at rollout time.
        advantages: ``[B, T]`` advantages (usually whitened).
        mask: ``[B, T]`` bool or 0/1 tensor.
        clip_range: ``c`` in ``clip(ratio, 1 - c, 1 + c)``.
        weights: ``[B, T]`` importance weights multiplying each token's loss (see
            :func:`importance_weights`), without gradients; None = 1. They are a factor apart from the
            ratio, which stays exactly 1 on the first pass over a batch.

    Returns:
        ``(loss, stats)``: 0-d loss and detached 0-d stats ``clipfrac`` (fraction of valid
        tokens where the clipped branch is the max), ``approx_kl`` (mean of
        ``0.5 * (logp - old_logp)^2``) and ``ratio_mean``.
    """
    mask = mask.bool()
    log_ratio = _zero_pad(logprobs - old_logprobs, mask)  # padding -> ratio 1, no overflow
    advantages = _zero_pad(advantages, mask)
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.max(pg_losses, pg_losses_clipped)
    loss = masked_mean(per_token if weights is None else per_token * weights.detach(), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses_clipped > pg_losses).to(ratio.dtype), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range_value: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss: the value head may not move more than ``clip_range_value`` per update.

    Args:
        values: ``[B, T]`` current value predictions (requires grad).
        old_values: ``[B, T]`` value predictions at rollout time.
        returns: ``[B, T]`` value targets (from :func:`compute_gae`).
        mask: ``[B, T]`` bool or 0/1 tensor.
        clip_range_value: Max absolute change of a value w.r.t. ``old_values``.

    Returns:
        ``(loss, stats)``: 0-d loss ``0.5 * mean(max(unclipped^2, clipped^2))`` and detached stat
        ``value_clipfrac`` (fraction of valid tokens where the clipped branch is the max).
    """
    mask = mask.bool()
    values, old_values, returns = (_zero_pad(x, mask) for x in (values, old_values, returns))
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf_losses = (values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), mask)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((vf_losses_clipped > vf_losses).to(values.dtype), mask)}
    return loss, stats
