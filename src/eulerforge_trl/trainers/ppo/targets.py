"""PPO's targets for one rollout: what the update optimises toward, built once, without gradients.

Phases 4-5 of a step: per-token rewards (the KL penalty to the reference on every token, the
normalised and EOS-penalised sequence score on the last), then GAE advantages and value targets.
With `use_kl_loss` the rewards are the score alone: the KL goes into the policy loss instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import losses


@dataclass(frozen=True)
class Targets:
    """Everything the PPO epochs compare against, all [B, R] over response tokens, 0 on padding."""

    logprobs: torch.Tensor  # log pi_old(token), temperature-scaled
    values: torch.Tensor  # V_old(state before each token)
    kl: torch.Tensor  # per-token KL estimate to the reference
    ref_logprobs: torch.Tensor  # log pi_ref(token), temperature-scaled (the KL loss's anchor)
    advantages: torch.Tensor  # whitened GAE advantages
    returns: torch.Tensor  # value targets
    # pi_old / pi_engine, truncated (`losses.importance_weights`), multiplying each token's policy loss, and
    # where the ratio passed the cap; None when the trainer's own weights sampled (or the correction is off)
    is_weights: torch.Tensor | None = None
    is_capped: torch.Tensor | None = None


@torch.no_grad()
def ppo_targets(
    scores: torch.Tensor,
    contains_eos: torch.Tensor,
    mask: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    cfg,
    kl_coef: float | None = None,
    engine_logprobs: torch.Tensor | None = None,
) -> Targets:
    """Phases 4-5 from the step's numbers.

    Args:
        scores: [B] sequence scores in the units PPO optimises (normalised when `normalize_scores`).
        contains_eos: [B] whether each response stopped by itself (`missing_eos_penalty`).
        mask: [B, R] response tokens up to and including the first stop token.
        logprobs, ref_logprobs, values: [B, R] pi_old, pi_ref and V_old of the sampled tokens.
        cfg: the preset's `training.ppo` section.
        kl_coef: the KL coefficient of this step (the adaptive controller's); None = `cfg.kl_coef`.
        engine_logprobs: [B, R] the rollout engine's log-probs of the sampled tokens, when the engine is
            not the trainer's own weights (`Rollout.engine_logprobs`): with
            `cfg.importance_sampling_correction` they give the importance weights.
    """
    logprobs = logprobs.detach().masked_fill(~mask, 0.0)
    ref_logprobs = ref_logprobs.masked_fill(~mask, 0.0)
    values = values.detach()
    if cfg.score_clip is not None:  # one outlier must not dominate the batch
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    scores = losses.penalize_missing_eos(scores, contains_eos, cfg.missing_eos_penalty, cfg.missing_eos_mode)
    beta = cfg.kl_coef if kl_coef is None else kl_coef
    reward_beta = 0.0 if cfg.use_kl_loss else beta  # with use_kl_loss the KL is in the loss (update.py)
    rewards, kl = losses.shape_rewards(scores, logprobs, ref_logprobs, mask, reward_beta, cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = losses.masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = losses.compute_gae(rewards, values, mask, cfg.gamma, cfg.lam)
    is_weights = is_capped = None
    if engine_logprobs is not None and cfg.importance_sampling_correction:
        is_weights, is_capped = losses.importance_weights(
            logprobs, engine_logprobs, mask, cfg.importance_sampling_mode, cfg.importance_sampling_cap
        )
    return Targets(
        logprobs=logprobs,
        values=values,
        kl=kl,
        ref_logprobs=ref_logprobs,
        advantages=losses.masked_whiten(advantages, mask),
        returns=returns,
        is_weights=is_weights,
        is_capped=is_capped,
    )
