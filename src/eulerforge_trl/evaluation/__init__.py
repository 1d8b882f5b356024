"""Compare trained models on the same prompts: RM reward, a judge, win rate and KL to the first model.

`evaluate_models` is what `eulerforge evaluate` runs (importing it loads torch).
"""

from .run import evaluate_models

__all__ = ["evaluate_models"]
