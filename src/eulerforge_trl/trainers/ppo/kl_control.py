"""The KL coefficient: fixed, or adapted each step toward a target KL (Ziegler et al. 2019,
"Fine-Tuning Language Models from Human Preferences", 2.2; TRL's former AdaptiveKLController)."""

from __future__ import annotations


class KLController:
    """`value` is the kl_coef the next step's rewards use; `update` adapts it when a target is set.

    With `target` set: e_t = clip(KL_t / target - 1, -0.2, 0.2), beta <- beta * (1 + e_t * n / horizon),
    n the samples of the step (every process's). Without: beta stays `init`.

    Example:
        >>> kl = KLController(0.05, target=6.0, horizon=10000)
        >>> kl.update(current_kl=12.0, samples=64)   # twice the target: beta grows by 0.2 * 64 / 10000
        >>> round(kl.value, 6)
        0.050064
    """

    def __init__(self, init: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = float(init), target, horizon

    def update(self, current_kl: float, samples: int) -> None:
        if self.target is None:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * samples / self.horizon
