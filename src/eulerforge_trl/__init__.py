"""eulerforge-trl: SFT -> reward model -> PPO (or DPO) on LoRA adapters, on top of Hugging Face TRL.

Importing the package is cheap and changes nothing in the process: torch/transformers load when a
stage runs. The CLI entry points turn on `enable_cpu_huge_pages()`; a notebook may call it itself.
"""

import os
import sys
import warnings
from importlib import import_module

from .stages import STAGES

__version__ = "0.1.0"

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_cpu_huge_pages(warn: bool = True) -> bool:
    """Ask torch's CPU allocator to back tensors of 2 MB and more with transparent huge pages.

    Call it before `import torch` (or set THP_MEM_ALLOC_ENABLE=1 yourself): torch reads the
    variable once, when it makes its first tensor. The `eulerforge` command, `python -m
    eulerforge_trl.train` and `python -m eulerforge_trl.pipeline` call it first thing; importing
    the package does not.

    Why: torch returns large CPU tensors to the OS when they are freed, so every PPO pass
    page-faults its activations and logits in again, 4 KB at a time. On SmolLM2-135M (fp32, 2
    cores) a short PPO benchmark took 2.7M page faults, 0.54M with huge pages, and the PPO step
    0.89x the time (benchmarks/RESULTS.md, `ab.py`). A value the user set (0 turns it off) is left
    alone. Linux only; no effect where transparent huge pages are `never`, nor on GPU memory.

    Args:
        warn: warn when torch is already imported (the CLI's entry points, also called in-process
            by tests and notebooks, do not).

    Returns:
        Whether the variable is now "1" (False when the user set another value).

    Example:
        >>> import eulerforge_trl
        >>> eulerforge_trl.enable_cpu_huge_pages()   # first cell, before anything imports torch
        True
    """
    if warn and "torch" in sys.modules and HUGE_PAGES_ENV not in os.environ:
        warnings.warn(
            "enable_cpu_huge_pages() was called after torch was imported: it may have no effect "
            "(call it before importing torch, or set THP_MEM_ALLOC_ENABLE=1 before starting Python)",
            stacklevel=2,
        )
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    return os.environ[HUGE_PAGES_ENV] == "1"


_EXPORTS = {
    "load_preset": "eulerforge_trl.config",
    "Preset": "eulerforge_trl.config",
    "train_stage": "eulerforge_trl.api",
    **{f"train_{name}": "eulerforge_trl.api" for name in STAGES},
    "run_stage": "eulerforge_trl.pipeline.run_stage",
    "run_pipeline": "eulerforge_trl.pipeline.full",
    "evaluate_models": "eulerforge_trl.evaluation",
    "load_reward_model": "eulerforge_trl.models.scorer",
    "score": "eulerforge_trl.models.scorer",
    "load_causal_lm": "eulerforge_trl.models.loading",
    "load_tokenizer": "eulerforge_trl.models.loading",
    "export_model": "eulerforge_trl.export",
}

__all__ = sorted([*_EXPORTS, "enable_cpu_huge_pages"])


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eulerforge_trl' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
