"""The stages, one record each: the one place that says what a stage is.

Adding a stage (RLOO, say) is one `Stage` record in `STAGES`, its section with the checks of its keys
(`problems(preset)`; a TRL stage's also in `config.trl_fields`) and its name in `TrainingSection.type`,
and one runner `run_<name>(preset, run, resume_from) -> metrics` under `trainers/`; the whole list,
presets and tests included, is docs/adding-a-stage.md. Dispatch (`pipeline.run_stage`),
the data-task and section rules (`config.rules`), the pipeline's wiring and valid chains
(`pipeline.full`), the plots, the summary and the notebook API (`train_<name>`) read this table;
`tests/test_architecture.py` holds it against the schema.

Imports nothing heavy and nothing else of the package: it sits at the bottom of the import graph,
and each runner is imported only when its stage runs.

Example:
    >>> from eulerforge_trl.stages import STAGES
    >>> STAGES["ppo"].inputs["training.reward_model.checkpoint_path"]
    'rm'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from importlib import import_module
from types import MappingProxyType


@dataclass(frozen=True)
class Stage:
    """What the package needs to know about one stage."""

    name: str  # `training.type`, the key under a pipeline preset's `stages:`, the `train_<name>` suffix
    data_task: str  # the `data.task` its rows must have (`DataSection.task`)
    runner: str  # "module:function", imported when the stage runs: fn(preset, run_dir, resume_from) -> metrics
    pipeline_dir: str  # its directory under a pipeline's output directory
    summary: Callable[[list[dict]], str]  # metrics.jsonl records -> the text of its pipeline summary line
    config_section: str | None = None  # the preset section only this stage reads, e.g. "training.ppo"
    curves: tuple[str, ...] = ()  # metric keys drawn in training_curves.png, one panel each (if logged)
    # in a pipeline: preset key -> the earlier stage whose `final/` is set there
    inputs: Mapping[str, str] = field(default_factory=dict)
    # keys of `inputs` a chain may leave out: without that stage the preset's own value stands (PPO and
    # GRPO after sft alone score with training.reward_funcs, no RM)
    optional_inputs: tuple[str, ...] = ()
    # other preset keys or sections it reads that not every stage does, e.g. "training.reward_funcs"
    reads: tuple[str, ...] = ()
    # it trains a LoRA adapter on a base other stages share: a preset without `lora:` is refused
    needs_lora: bool = False
    doc: str = ""  # one line on what it trains: the first line of `train_<name>`'s docstring

    def __post_init__(self):
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))

    def load_runner(self) -> Callable:
        """The runner function (imports torch, transformers and TRL: call it when the stage runs)."""
        module, _, function = self.runner.partition(":")
        return getattr(import_module(module), function)


def _values(records: list[dict], key: str) -> list[float]:
    """The logged numbers of `key` (metrics.jsonl holds null for a NaN or infinite value: left out)."""
    return [r[key] for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)]


def _first_last_loss(records: list[dict]) -> str:
    losses = _values(records, "loss")
    evals = _values(records, "eval_loss")
    text = f"loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "no loss logged"
    if evals:
        text += f", eval_loss {evals[-1]:.3f}"
    return text


def _preference_summary(records: list[dict]) -> str:
    """DPO, KTO: the loss, and TRL's rewards/margins (beta x log-ratio of the preferred answers minus the others')."""
    text = _first_last_loss(records)
    margins = _values(records, "rewards/margins")
    if margins:
        text += f", preference margin {margins[0]:.3f} -> {margins[-1]:.3f}"
    return text


def _rm_summary(records: list[dict]) -> str:
    final = [r for r in records if r.get("final_eval")]  # the held-out score of the saved final/
    if not final or not _values(final[-1:], "eval_accuracy") or not _values(final[-1:], "eval_margin"):
        return "no evaluation"
    return f"held-out accuracy {final[-1]['eval_accuracy']:.3f}, margin {final[-1]['eval_margin']:.2f}"


def _reward_summary(records: list[dict], held_out: bool = False) -> str:
    """The stages that optimise a reward (PPO, GRPO, RLOO): mean reward over the first and last 10% of the
    steps, the last KL when one is logged, and with `held_out` the held-out prompts' first and last reward."""
    rewards = _values(records, "reward_mean")
    if not rewards:
        return "no steps logged"
    k = max(1, len(rewards) // 10)
    text = f"reward_mean {sum(rewards[:k]) / k:.3f} (first 10%) -> {sum(rewards[-k:]) / k:.3f} (last 10%)"
    kls = _values(records, "kl_divergence")
    text += f", kl_divergence last {kls[-1]:.3f}" if kls else ""
    evals = _values(records, "eval_reward_mean")
    if held_out and len(evals) >= 2:
        text += f"; held-out prompts: reward {evals[0]:.3f} -> {evals[-1]:.3f}"
    return text


# what the stages that optimise a reward read: the learned RM and the reward functions beside it
REWARD_KEYS = ("training.reward_model", "training.reward_funcs", "training.reward_weights")
# what the stages that sample responses read: the rollout engine
SAMPLING_KEYS = ("generation",)

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            name="sft",
            data_task="sft",
            runner="eulerforge_trl.trainers.sft:run_sft",
            pipeline_dir="01_sft",
            summary=_first_last_loss,
            curves=("loss", "eval_loss", "mean_token_accuracy", "learning_rate"),
            doc="Supervised fine-tuning on {prompt, response} rows; `final/` is the merged SFT model.",
        ),
        Stage(
            name="rm",
            data_task="preference",
            runner="eulerforge_trl.trainers.reward:run_rm",
            pipeline_dir="02_rm",
            summary=_rm_summary,
            curves=("loss", "accuracy", "margin", "eval_accuracy", "eval_margin"),
            inputs={"model_name": "sft"},
            needs_lora=True,
            doc="Reward model: a LoRA adapter + RewardHead on the SFT model, trained on preference rows.",
        ),
        Stage(
            name="ppo",
            data_task="prompt_only",
            runner="eulerforge_trl.trainers.ppo.trainer:run_ppo",
            pipeline_dir="03_ppo",
            summary=partial(_reward_summary, held_out=True),
            config_section="training.ppo",
            curves=(
                "reward_mean",
                "eval_reward_mean",
                "kl_divergence",
                "entropy",
                "ppo_loss",
                "value_loss",
                "response_length",
            ),
            inputs={"model_name": "sft", "training.reward_model.checkpoint_path": "rm"},
            optional_inputs=("training.reward_model.checkpoint_path",),
            reads=(*REWARD_KEYS, *SAMPLING_KEYS),
            needs_lora=True,
            doc="PPO on the shared base: policy LoRA, reference = adapters off, RM adapter + head beside it.",
        ),
        Stage(
            name="grpo",
            data_task="prompt_only",
            runner="eulerforge_trl.trainers.grpo:run_grpo",
            pipeline_dir="03_grpo",
            summary=_reward_summary,
            config_section="training.grpo",
            curves=("reward_mean", "kl_divergence", "entropy", "loss", "reward_std", "completions/mean_length"),
            inputs={"model_name": "sft", "training.reward_model.checkpoint_path": "rm"},
            optional_inputs=("training.reward_model.checkpoint_path",),
            reads=(*REWARD_KEYS, *SAMPLING_KEYS),
            needs_lora=True,
            doc="GRPO on the shared base: completions scored in groups per prompt, no critic (TRL's GRPOTrainer).",
        ),
        Stage(
            name="dpo",
            data_task="preference",
            runner="eulerforge_trl.trainers.dpo:run_dpo",
            pipeline_dir="02_dpo",
            summary=_preference_summary,
            config_section="training.dpo",
            curves=("loss", "rewards/margins", "rewards/accuracies", "eval_rewards/margins"),
            inputs={"model_name": "sft"},
            doc="DPO on preference rows, reference = the model with adapters disabled.",
        ),
        Stage(
            name="rloo",
            data_task="prompt_only",
            runner="eulerforge_trl.trainers.rloo:run_rloo",
            pipeline_dir="03_rloo",
            summary=_reward_summary,
            config_section="training.rloo",
            curves=("reward_mean", "kl_divergence", "entropy", "loss", "reward_std", "completions/mean_length"),
            inputs={"model_name": "sft", "training.reward_model.checkpoint_path": "rm"},
            optional_inputs=("training.reward_model.checkpoint_path",),
            reads=(*REWARD_KEYS, *SAMPLING_KEYS),
            needs_lora=True,
            doc="RLOO on the shared base: a leave-one-out baseline per prompt, no critic (TRL's RLOOTrainer).",
        ),
        Stage(
            name="kto",
            data_task="unpaired_preference",
            runner="eulerforge_trl.trainers.kto:run_kto",
            pipeline_dir="02_kto",
            summary=_preference_summary,
            config_section="training.kto",
            curves=("loss", "rewards/margins", "kl", "eval_rewards/margins"),
            inputs={"model_name": "sft"},
            doc="KTO on unpaired rows {prompt, completion, label}, reference = the model with adapters disabled.",
        ),
    )
}


def pipeline_chains() -> list[tuple[str, ...]]:
    """Every stage sequence a pipeline may run, read from the stages' `inputs`.

    A chain starts at a stage with no inputs; each later stage takes the `final/` of the one just
    before it, and every stage it needs one from (its `inputs` less its `optional_inputs`) is earlier
    in the chain. Today: sft; sft, rm; sft, rm, ppo; sft, rm, grpo; sft, rm, rloo; sft, ppo; sft, grpo;
    sft, dpo; sft, rloo; sft, kto.
    """
    chains: list[tuple[str, ...]] = []

    def extend(chain: tuple[str, ...]) -> None:
        chains.append(chain)
        for stage in STAGES.values():
            sources = set(stage.inputs.values())
            needed = {source for key, source in stage.inputs.items() if key not in stage.optional_inputs}
            if stage.name not in chain and chain[-1] in sources and needed <= set(chain):
                extend((*chain, stage.name))

    for stage in STAGES.values():
        if not stage.inputs:
            extend((stage.name,))
    return chains
