"""The TRL config class of each TRL stage, and which of its fields a preset may set.

`training.<stage>:` of a TRL stage takes any field of that stage's TRL config class (TRL's own CLI,
`TrlParser`, reads the same dataclass): its fields, types and `metadata["help"]` are the schema, so
there is no second copy of them to drift. Our section declares only the keys whose default or
meaning we change, and our own keys; everything else set there is a pass-through field, checked
here against the dataclass when the preset loads. The fields the wrapper sets itself are refused,
each naming the preset key that sets it (or why the stage sets it), so nothing is set two ways.

TRL is imported only when a preset sets a pass-through field or `--explain` asks: importing it
takes seconds (transformers' `TrainingArguments`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import importlib
import math
import types
import typing
from typing import Any, Literal

# stage -> its TRL config class (in `trl`); a new TRL stage is one line here
TRL_CONFIGS = {
    "sft": "SFTConfig",
    "rm": "RewardConfig",
    "dpo": "DPOConfig",
    "grpo": "GRPOConfig",
    "rloo": "RLOOConfig",
    "kto": "KTOConfig",
}

# the field of a TRL stage's section that holds its pass-through fields; not a preset key itself
PASSTHROUGH = "passthrough"


def _key(key: str) -> str:
    return f"is set by {key}; set that instead"


def _why(reason: str) -> str:
    return f"is set by the stage itself: {reason}"


# TrainingArguments fields `trainers.common.common_trainer_args` sets, for every TRL stage
COMMON_OWNED = {
    "output_dir": _key("output_dir (or --output-dir); the checkpoints go to <output_dir>/checkpoints"),
    "learning_rate": _key("training.lr"),
    "num_train_epochs": _key("training.epochs"),
    "max_steps": _key("training.max_steps"),
    "per_device_train_batch_size": _key("training.batch_size"),
    "per_device_eval_batch_size": _key("training.batch_size"),
    "gradient_accumulation_steps": _key("training.grad_accum"),
    "seed": _key("training.seed"),
    "warmup_steps": _key("training.warmup_ratio"),
    "weight_decay": _key("training.weight_decay"),
    "lr_scheduler_type": _key("training.lr_scheduler"),
    "max_grad_norm": _key("training.max_grad_norm"),
    "logging_steps": _key("training.logging_steps"),
    "logging_first_step": _why("metrics.jsonl and the curves always start at step 1"),
    "save_strategy": _key("training.save_steps (a checkpoint every N steps)"),
    "save_steps": _key("training.save_steps"),
    "save_total_limit": _key("training.save_total_limit"),
    "eval_strategy": _key("data.eval_path or data.eval_split (held-out data is evaluated at every checkpoint)"),
    "eval_steps": _key("training.save_steps (evaluation runs at every checkpoint)"),
    "activation_checkpointing": _key("training.gradient_checkpointing"),
    "gradient_checkpointing": _key("training.gradient_checkpointing"),
    "bf16": _key("training.precision"),
    "fp16": _key("training.precision"),
    "report_to": _key("training.report_to"),
    "dataloader_pin_memory": _why("on with a GPU, off on a CPU"),
    "use_cpu": _why("from the device; the CPU processes of `accelerate launch` join one gloo group"),
    "accelerator_config": _why("a sharded CPU run keeps accelerate's configured state"),
    "fsdp": _key("`accelerate launch` (its FSDP configuration)"),
    "fsdp_config": _key("`accelerate launch` (its FSDP configuration)"),
    "deepspeed": _key("`accelerate launch` (its DeepSpeed configuration)"),
    "local_rank": _key("the launcher (`accelerate launch`, torchrun)"),
    "resume_from_checkpoint": _why(
        "a rerun resumes from the newest loadable checkpoint in <output_dir>/checkpoints (--no-resume starts over)"
    ),
    # TRL's own loading: every stage hands TRL a model and tokenizer it loaded itself
    "model_init_kwargs": _key("model_name, attn_implementation, quantization and training.precision"),
    "trust_remote_code": _why("the stage loads the model itself; TRL does not load one"),
    "chat_template_path": _key("chat_template"),
}

_NETWORK = "the reference (adapters off) and the policy must be the same network"
_NO_SYNC = "the reference is the model with its adapters off; there is no reference copy to sync"
_SAMPLING = {  # GRPO and RLOO: the fields `trainers.grpo_generation.grpo_generation_args` sets
    "use_vllm": _key("generation.backend"),
    "vllm_mode": _key("generation.backend (vllm = an engine colocated in the training process)"),
    "vllm_gpu_memory_utilization": _key("generation.vllm_gpu_memory_utilization"),
    "vllm_max_model_length": _key("data.max_prompt_length + max_completion_length"),
    "vllm_enable_sleep_mode": _why("the colocated engine stays awake between steps"),
    "vllm_importance_sampling_correction": _key("generation.backend (on with vllm)"),
    "cache_implementation": _key("generation.compile"),
    "generation_kwargs": _why("it holds the stop tokens (EOS and the end of turn) and the compiled cache's size"),
    "eval_on_start": _key("data.eval_path or data.eval_split (held-out prompts are scored before step 1)"),
    "num_generations_eval": _key("num_generations (held-out prompts get as many completions)"),
    "reward_weights": _key("training.reward_weights and training.reward_model.weight"),
    "disable_dropout": _why(_NETWORK),
    "sync_ref_model": _why(_NO_SYNC),
    "log_completions": _key("sample_every (samples.jsonl)"),
    "remove_unused_columns": _why("the data's other columns reach the reward functions"),
}

# fields each stage's runner sets itself, beside COMMON_OWNED (the keyword arguments it passes to
# `trainers.trl_config.build_trl_config`)
STAGE_OWNED: dict[str, dict[str, str]] = {
    "sft": {
        "max_length": _key("data.max_length"),
        "eos_token": _why("the tokenizer's EOS ends every response"),
        "assistant_only_loss": _key("data.assistant_turns (conversations are masked by the stage)"),
        "packing_strategy": _key("training.sft.packing_strategy (our key: null is resolved for the model)"),
    },
    "rm": {
        "max_length": _key("data.max_length"),
        "eos_token": _why("the tokenizer's EOS ends every response"),
    },
    "dpo": {
        "max_length": _key("data.max_length"),
        "truncation_mode": _why("a pair longer than data.max_length is dropped, never cut"),
        "disable_dropout": _why(_NETWORK),
        "sync_ref_model": _why(_NO_SYNC),
        "rpo_alpha": _key("training.dpo.rpo_alpha"),  # a key of the section; a field of trainers.dpo.RPOConfig
    },
    "grpo": dict(_SAMPLING),
    "rloo": dict(_SAMPLING),
    "kto": {
        "max_length": _key("data.max_length"),
        "disable_dropout": _why(_NETWORK),
        "sync_ref_model": _why(_NO_SYNC),
    },
}


# values of TRL fields typed `str` that TRL checks only at the first training step (a traceback after
# the model loaded); a typo is refused when the preset loads instead. From TRL 1.16's trainers.
CHOICES: dict[str, dict[str, tuple]] = {
    "grpo": {
        "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
        "scale_rewards": ("group", "batch", "none", True, False),
    },
    "dpo": {  # DPOTrainer's list
        "loss_type": tuple(
            "sigmoid hinge ipo exo_pair nca_pair robust bco_pair sppo_hard aot aot_unpaired apo_zero apo_down "
            "discopop sft sigmoid_norm".split()
        ),
    },
}


def owned_fields(stage: str) -> dict[str, str]:
    """{TRL field: why a preset may not set it} for `stage`: the wrapper sets these itself."""
    return {**COMMON_OWNED, **STAGE_OWNED[stage]}


def trl_config_class(stage: str) -> type:
    """The TRL config dataclass of `stage` (imports trl)."""
    return getattr(importlib.import_module("trl"), TRL_CONFIGS[stage])


@functools.cache
def trl_fields(stage: str) -> dict[str, dataclasses.Field]:
    """The init fields of `stage`'s TRL config class, by name."""
    return {f.name: f for f in dataclasses.fields(trl_config_class(stage)) if f.init}


@functools.cache
def trl_hints(stage: str) -> dict[str, Any]:
    return typing.get_type_hints(trl_config_class(stage))


def trl_default(stage: str, name: str) -> Any:
    f = trl_fields(stage)[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def trl_help(stage: str, name: str) -> str:
    """TRL's own help text of a field (`metadata["help"]`)."""
    return " ".join(str(trl_fields(stage)[name].metadata.get("help", "")).split())


def own_keys(section: type) -> list[str]:
    """The keys a TRL stage's section declares itself (pass-through fields go beside them)."""
    return [f.name for f in dataclasses.fields(section) if f.name != PASSTHROUGH]


def route_passthrough(tree: Any, sections: dict[str, type]) -> Any:
    """`tree` (a preset mapping: YAML or overrides) with every key of `training.<stage>` that its
    section does not declare moved under the section's pass-through field, as OmegaConf reads it.

    Args:
        sections: {stage: its section class} for the TRL stages.
    """
    training = tree.get("training") if isinstance(tree, dict) else None
    if not isinstance(training, dict):
        return tree
    routed = dict(training)
    for stage, section in sections.items():
        node = training.get(stage)
        if not isinstance(node, dict):
            continue
        own = set(own_keys(section))
        extra = {k: v for k, v in node.items() if k not in own}
        routed[stage] = {k: v for k, v in node.items() if k in own}
        if extra:
            routed[stage][PASSTHROUGH] = extra
    return {**tree, "training": routed}


def check_field(stage: str, section: type, name: str, value: Any) -> tuple[Any, str | None]:
    """(`value` as the TRL field `name` takes it, None) or (None, why it cannot be set: one clause).

    The value is converted as OmegaConf converts a schema value (an int where a float goes, a single
    value where a list goes), and checked against the field's type (`Literal`, an enum's values).
    """
    fields = trl_fields(stage)
    config = TRL_CONFIGS[stage]
    if name in own_keys(section):  # only a Preset built in Python can put one of ours here
        return None, f"a key of training.{stage} itself: set it there, not among TRL's fields"
    if name not in fields:
        close = difflib.get_close_matches(name, [*fields, *own_keys(section)], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return None, f"unknown key{hint} ({config} has no such field; --explain training.{stage} lists them)"
    owned = owned_fields(stage)
    if name in owned:
        return None, owned[name]
    choices = CHOICES.get(stage, {}).get(name)
    try:
        converted = value if choices and isinstance(value, bool) else _coerce(trl_hints(stage)[name], value)
    except _Mismatch as err:
        return None, f"{str(err) or 'a value of another type'} ({value!r} given; TRL's {config}.{name})"
    wrong = [v for v in (converted if isinstance(converted, list) else [converted]) if choices and v not in choices]
    if wrong:
        close = difflib.get_close_matches(str(wrong[0]), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return None, f"{wrong[0]!r} is not one of {', '.join(map(str, choices))}{hint} (TRL's {config}.{name})"
    return converted, None


class _Mismatch(ValueError):
    pass


def _coerce(hint, value):
    """`value` as `hint` takes it, or `_Mismatch` with what it must be."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):
            choices = [e.value for e in enums[0]]
            if value in choices:
                return value
            close = difflib.get_close_matches(value, choices, n=1)
            listed = (
                ", ".join(map(str, choices)) if len(choices) <= 10 else f"{len(choices)} names (--explain lists them)"
            )
            raise _Mismatch(f"must be one of {listed}" + (f"; did you mean {close[0]}?" if close else ""))
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(arm, value)
            except _Mismatch:
                continue
        raise _Mismatch(f"must be {type_text(hint)}")
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch(f"must be one of {', '.join(map(str, typing.get_args(hint)))}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("must be true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch("must be an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Mismatch("must be a finite number")
            return float(value)
        raise _Mismatch("must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("must be a string")
    if origin in (list, tuple) or hint in (list, tuple):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        items = value if isinstance(value, (list, tuple)) else [value]  # one value where a list goes
        converted = [_coerce(item, v) for v in items]
        return tuple(converted) if (origin or hint) is tuple else converted
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _Mismatch("must be a mapping of keys")
    raise _Mismatch(f"must be {type_text(hint)}, which a preset cannot hold")


def type_text(hint) -> str:
    """A type as `--explain` and the messages spell it: `int or null`, `one of a, b`."""
    if hint is Any:
        return "any"
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        rest = [type_text(a) for a in (enums or args) if a is not type(None)]
        return " or ".join(rest) + (" or null" if type(None) in args else "")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in hint)
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))
