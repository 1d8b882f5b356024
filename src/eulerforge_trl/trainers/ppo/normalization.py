"""Score normalisation ("N implementation details", 2.4): total rewards in units of the SFT policy's
reward spread, so that kl_coef and missing_eos_penalty mean the same whatever the rewards' scale.

The mean and std are estimated once, before step 1, from `score_norm_samples` responses of the
SFT policy (the policy adapter starts at zero, so the policy *is* the SFT model) over every
process, then kept and checkpointed for the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)


class ScoreScale:
    """The (mean, std) of the total reward under the SFT policy; `None` until estimated."""

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
        mean, std = scores.mean().item(), scores.std(unbiased=False).clamp(min=1e-6).item()
        self.stats = (mean, std)
        logger.info(
            "reward normalisation from %d samples of the SFT policy: mean %.4f, std %.4f", len(scores), mean, std
        )
        return {"score_norm_mean": mean, "score_norm_std": std, "score_norm_samples": len(scores)}


def sft_scores(
    batches: list[list[int]], sample_and_score: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor | None]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] raw total rewards of this rank's batches and the RM's weighted part of them (zeros without an RM).

    `sample_and_score(rows)` samples the rows' prompts and returns (total, rm_share or None).
    """
    scores, rm_share = [], []
    for rows in batches:
        total, share = sample_and_score(rows)
        scores.append(total)
        rm_share.append(share if share is not None else torch.zeros_like(total))
    return torch.cat(scores), torch.cat(rm_share)
