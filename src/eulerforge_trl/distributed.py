"""Sharded training (FSDP2) as `accelerate launch --config_file <fsdp config>` asks for it.

accelerate turns a launch with an FSDP config into sharded training only on accelerators: its
`AcceleratorState` promotes MULTI_GPU/MULTI_XPU/... to FSDP, never MULTI_CPU (accelerate 1.15,
`state.py`, the `elif self.distributed_type in [DistributedType.MULTI_GPU, ...]` branch). CPU
processes, which we join into a gloo group (`runtime.process_state`), therefore trained as
replicated DDP under an FSDP config, silently. torch's FSDP2 (`fully_shard`) itself runs on a CPU
device mesh over gloo, so on CPU we make the shared state what accelerate makes it on a GPU
(`shard_cpu_processes`); everything after that, `fsdp2_prepare_model` included, is accelerate's
own code. The promotion can go once accelerate promotes MULTI_CPU itself.

What cannot be sharded refuses in one line (`check_sharding`) instead of replicating. Our PPO
trainer shards with the same plugin in `trainers/ppo/sharding.py`.
"""

from __future__ import annotations

import os

from .errors import PresetError

FSDP_ENV = "ACCELERATE_USE_FSDP"
FSDP_VERSION_ENV = "FSDP_VERSION"
DEEPSPEED_ENV = "ACCELERATE_USE_DEEPSPEED"


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def requested_sharding() -> str | None:
    """What the launcher asked for: "fsdp2", "fsdp1", "deepspeed" or None (plain data parallelism).

    Read from the variables `accelerate launch` sets from its config file (`distributed_type: FSDP`
    -> ACCELERATE_USE_FSDP, `fsdp_version` -> FSDP_VERSION; DEEPSPEED -> ACCELERATE_USE_DEEPSPEED).
    """
    if _flag(DEEPSPEED_ENV):
        return "deepspeed"
    if _flag(FSDP_ENV):
        return "fsdp2" if os.environ.get(FSDP_VERSION_ENV, "1") == "2" else "fsdp1"
    return None


def shard_cpu_processes() -> None:
    """On CPU processes launched with an FSDP2 config, make accelerate's shared state FSDP2.

    Call once per process, after the gloo group exists and before any `Accelerator` is built (the
    trainers' accelerators then find the state initialised and shard with accelerate's FSDP2 code).
    Mirrors what `AcceleratorState.__init__` does on a GPU: the plugin from the launcher's
    variables, its mixed precision set, `distributed_type` FSDP in both shared states.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = AcceleratorState._shared_state
    if state and state.get("distributed_type") == DistributedType.FSDP:
        return  # already done in this process (a pipeline runs several stages)
    Accelerator(cpu=True)  # builds the shared AcceleratorState (MULTI_CPU, gloo) from the launcher's variables
    state = AcceleratorState()
    if state.distributed_type != DistributedType.MULTI_CPU or state.num_processes < 2:
        return
    state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads FSDP_* as accelerate does
    if state.mixed_precision != "no":
        state.fsdp_plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


# Stages that shard with FSDP2 only, and why (TRL's trainers, SFT/RM/DPO/GRPO, also run under
# DeepSpeed and FSDP1 on GPUs).
FSDP2_ONLY_STAGES = {
    "ppo": "our PPO trainer shards its one shared base with FSDP2 (trainers/ppo/sharding.py) and has no DeepSpeed or FSDP1 path",
}


def check_sharding(stage: str, on_cpu: bool) -> None:
    """Refuse, in one line, a sharding request this run cannot honour, instead of replicating.

    Called on every rank before anything is loaded, so every rank stops with the same message.
    """
    kind = requested_sharding()
    if kind is None:
        return
    asked = {"fsdp2": "FSDP2", "fsdp1": "FSDP (version 1)", "deepspeed": "DeepSpeed"}[kind]
    if stage in FSDP2_ONLY_STAGES and kind != "fsdp2":
        raise PresetError(
            f"training.type {stage} cannot be sharded with {asked}: {FSDP2_ONLY_STAGES[stage]}; use an FSDP2 "
            "config (examples/accelerate/fsdp.yaml on GPUs, fsdp2_cpu_2proc.yaml on CPUs) or launch it "
            "data-parallel (multi_cpu_2proc.yaml, `accelerate launch --num_processes N`)"
        )
    if kind == "fsdp1" and on_cpu:
        raise PresetError(
            "the accelerate config asks for FSDP version 1, which does not run on CPU processes here: "
            "set `fsdp_version: 2` (examples/accelerate/fsdp2_cpu_2proc.yaml)"
        )
    if kind == "deepspeed" and on_cpu:
        raise PresetError(
            "the accelerate config asks for DeepSpeed, which this project runs on GPUs only: on CPUs use "
            "examples/accelerate/fsdp2_cpu_2proc.yaml (FSDP2) or multi_cpu_2proc.yaml (data parallel)"
        )


def sharded_trainer_args() -> dict:
    """`TrainingArguments` fields that keep a sharded process state (empty when nothing is sharded).

    transformers resets accelerate's shared state when it sets up its devices unless told to use the
    configured one; without this the promotion of `shard_cpu_processes` would be undone. Each
    trainer also gets a fresh FSDP plugin, as accelerate gives each `Accelerator` on GPUs: preparing
    a model fixes the plugin's wrap policy to that model's layer classes, and a pipeline runs
    several stages in one process.
    """
    return {"accelerator_config": {"use_configured_state": True}} if renew_cpu_fsdp_plugin() else {}


def renew_cpu_fsdp_plugin() -> bool:
    """On CPU processes made to shard (`shard_cpu_processes`), a fresh FSDP plugin for the next
    trainer, as accelerate gives each `Accelerator` on GPUs; returns whether the state is such."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = AcceleratorState._shared_state
    if state.get("distributed_type") != DistributedType.FSDP or not state.get("_cpu"):
        return False
    plugin = FullyShardedDataParallelPlugin()
    if state["_mixed_precision"] != "no":
        plugin.set_mixed_precision(state["_mixed_precision"])
    state["fsdp_plugin"] = plugin
    return True


def is_sharded(accelerator) -> bool:
    """Whether `accelerator` shards the model's weights (FSDP, or DeepSpeed ZeRO-3)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


def fit_wrap_policy(accelerator, model) -> None:
    """Wrap the decoder layers the model really has, when the config names none.

    accelerate's TRANSFORMER_BASED_WRAP defaults to every class in the model's `_no_split_modules`
    and fails on one the model lacks: Qwen3.5's text-only causal LM lists its vision block
    (`Qwen3_5VisionBlock`), so FSDP refused Qwen3.5 models. Call before the trainer prepares the model.
    """
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None:
        return
    from accelerate.utils.dataclasses import get_module_class_from_name
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    if plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None:
        names = getattr(model, "_no_split_modules", None) or []
        plugin.transformer_cls_names_to_wrap = sorted(n for n in names if get_module_class_from_name(model, n))
