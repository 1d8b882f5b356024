"""The reward PPO maximises: a learned RM and/or reward functions, weighted and summed.

    total = training.reward_model.weight * RM score + sum_i training.reward_weights[i] * f_i

Each source is also reported on its own, unweighted, as `reward/<name>`: the RM as `reward/rm`, a
function under its `__name__` (`reward/<name>_2` for a second function of the same name).

Which RM takes part (`RewardSources.from_preset`):
- `training.reward_model.checkpoint_path` set: the rm stage's adapter + head beside the policy's
  adapter on the shared base (`RewardScorer.attach`), or, with `training.reward_model.separate`,
  loaded as a model of its own on its own base and tokenizer (`load_reward_model`);
- no checkpoint but reward functions: no RM at all;
- neither: a random RewardHead on the policy's base, with a loud warning (debugging only).

The RM reads each (prompt, response) re-rendered from text by `data.render.reward_batch` with its
own tokenizer, exactly as it was trained. Functions are called as TRL's GRPOTrainer calls them
(`rewards.functions.call_reward_function`): the prompts as in the data file, the completions as
text (an assistant message list for conversational prompts), the sampled `completion_ids`, the
data file's other columns (`columns_of`), `trainer_state`, and `log_extra` / `log_metric`; what
functions log with `log_metric` is kept until `pop_logged_metrics` (TRL averages it per logging
step the same way); `log_extra` columns are dropped (PPO has no completions table).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.render import as_completion
from ..errors import UserError
from ..models.reward_head import RewardHead
from ..models.scorer import RewardScorer, load_reward_model, score_pairs
from .functions import call_reward_function, load_reward_function

FUNCS_KEY = "training.reward_funcs"
RM_NAME = "rm"


@dataclass(frozen=True)
class RewardFunction:
    """One entry of `training.reward_funcs`: `name` is its logging name (`reward/<name>`)."""

    name: str
    spec: str
    fn: Callable
    weight: float


@dataclass
class RewardModelSource:
    """The learned RM and the tokenizer that renders its input (the policy's, unless `separate`)."""

    scorer: RewardScorer
    tokenizer: object
    weight: float
    # True: it reads the policy's own model (its adapter beside the policy's, or the random head)
    shares_base: bool = True
    # the rm stage's final/ it was loaded from ("" for the random head); errors name it
    checkpoint: str = ""

    @property
    def shared_checkpoint(self) -> str:
        """The rm stage's final/ when its adapter sits on the policy's base (the adapter critic starts from it)."""
        return self.checkpoint if self.shares_base else ""

    def score(
        self, prompts: list, completions: list[str], batch_size: int, finished: list[bool] | None = None
    ) -> torch.Tensor:
        """[B] raw scores, each pair rendered as the RM was trained (`reward_ids`); a response that was
        cut at the length limit (`finished` False) rendered as cut.

        Raises:
            UserError: a score is NaN or +-inf (broken RM weights): training on it would make the
                policy NaN, so it stops before any optimizer step uses it.
        """
        scores = score_pairs(self.scorer, self.tokenizer, prompts, completions, batch_size, finished)
        bad = ~torch.isfinite(scores)
        if bool(bad.any()):
            first = scores[bad][0].item()
            where = (
                f"training.reward_model.checkpoint_path {self.checkpoint}" if self.checkpoint else "the reward model"
            )
            raise UserError(
                f"{where}: scored {int(bad.sum())} of {len(scores)} completions {first} (not a finite number); "
                "its weights are broken (retrain the rm stage), and a policy trained on them would turn NaN"
            )
        return scores


def load_functions(specs: list[str], weights: list[float] | None) -> list[RewardFunction]:
    """Import every `training.reward_funcs` entry; a UserError naming the first one that fails.

    Example:
        >>> [f.name for f in load_functions(["my_rules.py:length", "pkg.mod:length"], [1.0, 0.5])]
        ['length', 'length_2']
    """
    weights = list(weights) if weights is not None else [1.0] * len(specs)
    taken = {RM_NAME}  # the RM's name, whether or not an RM takes part: names mean the same in every run
    functions = []
    for spec, weight in zip(specs, weights):
        fn = load_reward_function(spec, key=FUNCS_KEY)
        base = getattr(fn, "__name__", None) or spec.rpartition(":")[2]
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        functions.append(RewardFunction(name=name, spec=spec, fn=fn, weight=float(weight)))
    return functions


def columns_of(rows: list[dict]) -> dict[str, list]:
    """The data file's other columns of `rows` (carried under "columns", see `jsonl.split_rows`), one
    value per row, None where a row lacks one: the keyword arguments reward functions receive."""
    names = dict.fromkeys(name for row in rows for name in row.get("columns", {}))
    return {name: [row.get("columns", {}).get(name) for row in rows] for name in names}


class RewardSources:
    """The RM (optional) and the reward functions of one run, and how they add up.

    Example:
        >>> sources = RewardSources.from_preset(preset, policy, tokenizer, device, "reward")
        >>> total, parts = sources.score(prompts, responses, columns_of(rows))
        >>> parts.keys()   # dict_keys(['reward/rm', 'reward/my_rule'])
    """

    def __init__(self, rm: RewardModelSource | None, functions: list[RewardFunction], device, batch_size: int = 16):
        self.rm, self.functions, self.device, self.batch_size = rm, functions, device, batch_size
        self.logged_metrics: dict[str, list[float]] = {}  # what functions passed to log_metric, until popped

    @classmethod
    def from_preset(cls, preset, model, tokenizer, device, adapter_name: str, dtype=None) -> RewardSources:
        """Build the run's sources from `training.reward_model`, `reward_funcs` and `reward_weights`.

        Args:
            preset: the loaded Preset.
            model: the policy's peft model; a shared-base RM's adapter is loaded into it as `adapter_name`.
            tokenizer: the policy's tokenizer (renders the shared-base RM's input).
            device: where scores are computed and returned.
            dtype: weights dtype of a separate RM's base.

        Raises:
            UserError / ModelError: a function does not import; the RM checkpoint does not fit.
        """
        from ..models.loading import resolved_model_name

        t = preset.training
        functions = load_functions(list(t.reward_funcs), t.reward_weights)
        checkpoint = t.reward_model.checkpoint_path or ""
        weight = float(t.reward_model.weight)
        batch_size = max(1, t.batch_size)
        if not checkpoint and functions:
            return cls(None, functions, device, batch_size)
        if checkpoint and t.reward_model.separate:
            scorer, rm_tokenizer = load_reward_model(checkpoint, dtype=dtype)
            scorer.model.to(device)
            scorer.head.to(device)
            rm = RewardModelSource(scorer, rm_tokenizer, weight, shares_base=False, checkpoint=checkpoint)
            return cls(rm, functions, device, batch_size)
        # "" with no functions: RewardScorer.attach scores with a random head, and warns loudly
        scorer = RewardScorer.attach(model, checkpoint, resolved_model_name(preset.model_name), adapter_name)
        rm = RewardModelSource(scorer, tokenizer, weight, shares_base=True, checkpoint=checkpoint)
        return cls(rm, functions, device, batch_size)

    @property
    def names(self) -> list[str]:
        """The logged names of every source, `reward/<name>`, the RM first."""
        return ([f"reward/{RM_NAME}"] if self.rm else []) + [f"reward/{f.name}" for f in self.functions]

    def score(
        self,
        prompts: list,
        completions: list[str],
        columns: dict[str, list] | None = None,
        completion_ids: list[list[int]] | None = None,
        trainer_state=None,
        finished: list[bool] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted total and each source's raw values for B (prompt, completion) pairs.

        Args:
            prompts: B prompts as the data file holds them (text or message lists).
            completions: B responses as text (what the policy wrote, up to its stop token).
            columns: further per-row columns for the functions, each a list of B values.
            completion_ids: B lists of the sampled token ids, up to and including the stop token
                (TRL's `completion_ids`); None only where no function needs them.
            trainer_state: handed to the functions as `trainer_state` (TRL passes its `TrainerState`:
                `global_step`, `max_steps`, ...), None outside training.
            finished: B flags, False where the response hit the length limit without a stop token:
                the RM reads it as cut (no closing tokens appended). None: every response finished.

        Returns:
            total: [B] float32, `sum(weight * value)` over the sources; a function's None (NaN)
                adds nothing, as in TRL (nansum), even when it gives no number for any completion.
            parts: {"reward/<name>": [B] float32 raw values} per source, NaN where a function gave None.

        Raises:
            UserError: a function raised, returned the wrong number of values, a non-number or +-inf;
                the RM scored NaN or +-inf; the weighted total overflows float32.
        """
        parts: dict[str, torch.Tensor] = {}
        weights: list[float] = []
        if self.rm is not None:
            scores = self.rm.score(prompts, completions, self.batch_size, finished)
            parts[f"reward/{RM_NAME}"] = scores.float().to(self.device)
            weights.append(self.rm.weight)
        if self.functions:
            # TRL's convention: a conversation's completion is the assistant's message list
            as_given = [as_completion(p, c) for p, c in zip(prompts, completions)]
            for f in self.functions:
                values = call_reward_function(
                    f.fn,
                    f"{FUNCS_KEY} {f.spec}",
                    list(prompts),
                    as_given,
                    completion_ids=completion_ids,
                    trainer_state=trainer_state,
                    log_metric=self._log_metric,
                    **(columns or {}),
                )
                parts[f"reward/{f.name}"] = torch.tensor(values, dtype=torch.float32, device=self.device)
                weights.append(f.weight)
        stacked = torch.stack(list(parts.values()), dim=1)  # [B, sources]
        weight = torch.tensor(weights, dtype=torch.float32, device=self.device)
        total = (stacked * weight).nansum(dim=1)
        if bool(torch.isinf(total).any()):  # each value is finite (checked above): the weights overflowed
            raise UserError(
                f"{FUNCS_KEY} / training.reward_weights: the weighted total reward overflows float32 "
                f"({', '.join(f'{n}={w:g}' for n, w in zip(self.names, weights))}); use smaller weights or values"
            )
        return total, parts

    def _log_metric(self, name: str, value: float) -> None:
        self.logged_metrics.setdefault(name, []).append(float(value))

    def pop_logged_metrics(self) -> dict[str, float]:
        """{name: mean} of what the functions logged with `log_metric` since the last call (TRL logs
        them under their own names, averaged over a logging step), and forget them."""
        logged, self.logged_metrics = self.logged_metrics, {}
        return {name: sum(values) / len(values) for name, values in logged.items() if values}

    def rm_share(self, parts: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """[B] the RM's weighted part of the total, None without an RM."""
        return self.rm.weight * parts[f"reward/{RM_NAME}"] if self.rm is not None else None

    def critic_init_head(self) -> RewardHead | None:
        """The head a critic on the policy's hidden states starts from: the RM's head times its weight
        (it estimates the RM's part of the total), when the RM reads the policy's own base; else None."""
        if self.rm is None or not self.rm.shares_base:
            return None
        head = copy.deepcopy(self.rm.scorer.head)
        with torch.no_grad():
            head.linear.weight.mul_(self.rm.weight)
            if head.linear.bias is not None:
                head.linear.bias.mul_(self.rm.weight)
        return head


__all__ = ["RewardFunction", "RewardModelSource", "RewardSources", "columns_of", "load_functions"]
