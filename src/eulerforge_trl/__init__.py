"""eulerforge-trl: SFT -> reward model -> PPO (or DPO) on LoRA adapters, on top of Hugging Face TRL.

Importing the package is cheap and changes nothing in the process: torch/transformers load when a
stage runs. The CLI entry points turn on `enable_cpu_huge_pages()`; a notebook may call it itself.
"""

from importlib import import_module

from .runtime import enable_cpu_huge_pages as enable_cpu_huge_pages  # public, in __all__
from .stages import STAGES

__version__ = "0.1.0"

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
