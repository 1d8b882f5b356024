"""eulerforge-trl: SFT -> reward model -> PPO (or DPO) on LoRA adapters, on top of Hugging Face TRL.

Importing the package is cheap; torch/transformers load when a stage runs.
"""

import os
from importlib import import_module


def _huge_pages_for_large_cpu_tensors() -> None:
    """Ask torch's CPU allocator to back tensors of 2 MB and more with transparent huge pages.

    Why: torch returns large CPU tensors to the OS when they are freed, so every PPO pass
    page-faults its activations and logits in again, 4 KB at a time. On SmolLM2-135M (fp32, 2
    cores) a short PPO benchmark took 2.7M page faults, 0.54M with huge pages, and the PPO step
    0.89x the time (benchmarks/RESULTS.md, `ab.py`). torch reads THP_MEM_ALLOC_ENABLE once, when it
    makes its first tensor, so this runs at package import, before any torch import of ours; a
    value the user set (0 turns it off) is left alone. Linux only; no effect where transparent
    huge pages are `never`, nor on GPU memory.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


_huge_pages_for_large_cpu_tensors()

from .stages import STAGES  # noqa: E402  (after the allocator setting, which must precede torch)

__version__ = "0.1.0"

_EXPORTS = {
    "load_preset": "eulerforge_trl.config",
    "Preset": "eulerforge_trl.config",
    "train_stage": "eulerforge_trl.api",
    **{f"train_{name}": "eulerforge_trl.api" for name in STAGES},
    "run_stage": "eulerforge_trl.pipeline.stages",
    "run_pipeline": "eulerforge_trl.pipeline.full",
    "evaluate_models": "eulerforge_trl.evaluation",
    "load_reward_model": "eulerforge_trl.models.scorer",
    "score": "eulerforge_trl.models.scorer",
    "load_causal_lm": "eulerforge_trl.models.loading",
    "load_tokenizer": "eulerforge_trl.models.loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eulerforge_trl' has no attribute {name!r}")
