"""The score scale PPO normalises total rewards by: their mean and spread under the SFT policy.

"The N Implementation Details of RLHF with PPO" (2.4) normalise RM scores to mean 0, std 1 under
the SFT policy, so `kl_coef` and `missing_eos_penalty` mean the same whatever the RM's scale. A
spread that is (nearly) zero cannot be divided by: with reward functions alone and a sparse reward
(every SFT sample scores 0 on an exact-match task), the std was clamped to 1e-6 and the policy's
first success then scored ~1e6 normalised units, swamping the KL penalty and the value loss. Then
the scale falls back to 1 (raw units, still centred on the SFT mean) and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

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
