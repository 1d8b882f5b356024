"""The score scale PPO normalises total rewards by: their mean and spread under the SFT policy.

"The N Implementation Details of RLHF with PPO" (2.4) normalise RM scores to mean 0, std 1 under
the SFT policy, so `kl_coef` and `missing_eos_penalty` mean the same whatever the RM's scale. A
spread that is (nearly) zero cannot be divided by: with reward functions alone and a sparse reward
(every SFT sample scores 0 on an exact-match task), a std clamped to a tiny floor would score the
policy's first success in millions of normalised units, swamping the KL penalty and the value loss.
So the scale falls back to 1 (raw units, still centred on the SFT mean) and says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

logger = logging.getLogger(__name__)

# a spread below this share of the scores' magnitude (at least 1) is no spread: float noise, a constant reward
RELATIVE_FLOOR = 1e-4


class ScoreScale(NamedTuple):
    mean: float
    std: float  # what scores are divided by: the spread, or 1.0 when there is none (see `warning`)
    warning: str | None  # why the spread was not used, None when it was


def score_scale(scores: Sequence[float]) -> ScoreScale:
    """Mean and (biased) std of the SFT policy's total rewards, with std 1 when they barely vary.

    Args:
        scores: the raw total rewards of the SFT policy's samples, every process's (a list, a
            tensor, an array: anything `float()` reads item by item). NaN is not expected
            (totals are nansums).

    Returns:
        `ScoreScale(mean, std, warning)`: normalise as `(score - mean) / std`. `warning` is a
        one-line message to log when the spread was below `RELATIVE_FLOOR * max(1, |mean|)`
        (including fewer than two samples) and std fell back to 1.0.

    Example:
        >>> score_scale([0.0, 1.0, 0.0, 1.0])
        ScoreScale(mean=0.5, std=0.5, warning=None)
        >>> score_scale([0.0] * 64).std
        1.0
    """
    values = [float(s) for s in scores]
    if not values:
        return ScoreScale(0.0, 1.0, "reward normalisation: no samples of the SFT policy were scored; using std 1")
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    floor = RELATIVE_FLOOR * max(1.0, abs(mean))
    if len(values) > 1 and std >= floor:
        return ScoreScale(mean, std, None)
    return ScoreScale(
        mean,
        1.0,
        f"reward normalisation: the {len(values)} samples of the SFT policy all scored about {mean:.4g} "
        f"(std {std:.3g} < {floor:.3g}), so dividing by their spread would blow the first different score up "
        "by its inverse; normalising by std 1 instead (raw units, centred on that mean). With a sparse reward, "
        "raise training.ppo.score_norm_samples or set training.ppo.normalize_scores=false",
    )


__all__ = ["RELATIVE_FLOOR", "ScoreScale", "score_scale"]


class ScoreNormalizer:
    """Total rewards normalised by the SFT policy's (mean, std) (`score_scale`), estimated once before
    step 1 from `score_norm_samples` responses over every process, then kept and checkpointed."""

    def __init__(self, enabled: bool, samples: int):
        self.enabled, self.samples = enabled, samples
        self.stats: tuple[float, float] | None = None

    @property
    def needed(self) -> bool:
        return self.enabled and self.stats is None

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        """[B] raw total rewards -> normalised ones (unchanged when normalisation is off)."""
        if not self.enabled:
            return scores
        mean, std = self.stats
        return (scores - mean) / std

    def estimate(self, scores: torch.Tensor) -> dict[str, float]:
        """Set the scale from every process's [N] SFT-policy scores; returns what to log."""
        mean, std, warning = score_scale(scores.tolist())
        self.stats = (mean, std)
        if warning:
            logger.warning(warning)
        logger.info(
            "reward normalisation from %d samples of the SFT policy: mean %.4f, std %.4f", len(scores), mean, std
        )
        return {"score_norm_mean": mean, "score_norm_std": std, "score_norm_samples": len(scores)}


@torch.no_grad()
def sft_scores(batches: list[list[int]], scorer, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] raw total rewards of this rank's batches of training rows (indices), sampled and scored by
    `scorer` (a `scoring.RolloutScorer`), and the RM's weighted part of them (zeros without an RM)."""
    scores, rm_share = [], []
    for indices in batches:
        roll = scorer.sample_indices(indices)
        total, parts = scorer.score(roll, [scorer.prompts.rows[i] for i in indices], step)
        share = scorer.rewards.rm_share(parts)
        scores.append(total)
        rm_share.append(share if share is not None else torch.zeros_like(total))
    return torch.cat(scores), torch.cat(rm_share)
