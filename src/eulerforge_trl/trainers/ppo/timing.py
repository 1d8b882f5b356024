"""Wall time per phase of a PPO step: the `time_*` metrics, and what the benchmarks compare."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

PHASES = ("generate", "reward", "reference", "old_logprobs", "update", "weight_sync")


class PhaseTimer:
    """Seconds per phase of one step, measured after the device's queued work (GPU kernels run
    asynchronously: without a synchronise, the next phase would be charged for this one's)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, dict.fromkeys(PHASES, 0.0)
        self.start = self.now()
        self.end: float | None = None

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        start = self.now()
        yield
        self.seconds[phase] += self.now() - start

    def stop(self) -> None:
        """The step's end: what `metrics` reports runs from the timer's creation to here."""
        self.end = self.now()

    def metrics(self, generated_tokens: int) -> dict[str, float]:
        """The step's `time_*` metrics and throughputs, from its start until `stop()` (or now)."""
        t, elapsed = self.seconds, (self.end or self.now()) - self.start
        return {
            "time_generate": t["generate"],
            "time_reward": t["reward"],
            "time_reference": t["reference"],
            "time_old_logprobs": t["old_logprobs"],
            "time_score": t["reward"] + t["reference"] + t["old_logprobs"],
            "time_train": t["update"],
            "time_weight_sync": t["weight_sync"],
            "time_step": elapsed,
            "tokens_per_second": generated_tokens / elapsed,
            "generated_tokens_per_second": generated_tokens / max(t["generate"], 1e-9),
        }
