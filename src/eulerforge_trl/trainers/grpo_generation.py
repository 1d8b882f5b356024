"""`generation:` mapped onto TRL's GRPOConfig and RLOOConfig: GRPO and RLOO sample through TRL's own engines
(the same fields and generation code in both trainers).

backend hf -> TRL's `generate` on the policy (with `generation.compile`: one static KV cache and the
decode step compiled by transformers, `compile_decoding`); backend vllm -> TRL's colocated vLLM generation on our
engine (`grpo_vllm`): built with `use_vllm` off, so TRL starts no engine of its own, then given ours,
which gets the merged LoRA weights pushed out of place.
"""

from __future__ import annotations

import torch

from ..config.schema import Preset
from ..errors import PresetError


def grpo_generation_args(preset: Preset) -> dict:
    """The GRPOConfig / RLOOConfig fields for `preset.generation`; settings TRL cannot honour are refused.

    `max_completion_length` is read from the stage's own section (`training.grpo` or `training.rloo`).
    """
    stage = preset.training.type
    gen, section = preset.generation, getattr(preset.training, stage)
    if gen.merged_copy:
        raise PresetError(
            f"generation.merged_copy: {stage.upper()} samples through TRL's generate on the policy itself, which "
            "has no such setting; leave it null (PPO reads it)"
        )
    if gen.backend == "hf":
        if not compiles(preset):
            return {"use_vllm": False, "cache_implementation": None}
        # one cache size for every prompt (they are cut to max_prompt_length): no recompile as lengths vary
        cache_len = preset.data.max_prompt_length + section.max_completion_length
        return {"use_vllm": False, "cache_implementation": "static", "generation_kwargs": {"max_cache_len": cache_len}}
    return {
        "use_vllm": False,  # TRL starts no engine: `grpo_vllm.install_vllm_engine` hands it ours and turns this on
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": gen.vllm_gpu_memory_utilization,
        "vllm_max_model_length": preset.data.max_prompt_length + section.max_completion_length,
        "vllm_enable_sleep_mode": False,
        "vllm_importance_sampling_correction": True,  # TRL's default: correct the sampler/trainer mismatch
    }


def compiles(preset: Preset) -> bool:
    """Whether GRPO's hf backend compiles its decoding: `generation.compile`, null = on with CUDA.

    Never with `quantization`: transformers does not compile a bitsandbytes-quantized model, and a
    static cache decoded eager is slower than the default cache (the schema refuses an explicit
    `generation.compile=true` there).
    """
    if preset.quantization is not None:
        return False
    return torch.cuda.is_available() if preset.generation.compile is None else preset.generation.compile


def stop_generation_at(preset: Preset, model, args, stop_ids: list[int]) -> None:
    """Make TRL end completions at `stop_ids` (EOS and the chat template's end of turn, as PPO does).

    TRL reads every id of `model.generation_config.eos_token_id` for hf's `generate` and for its
    completion masks (a completion ending in one is finished, not truncated); its vLLM generation
    builds `SamplingParams` from `args.generation_kwargs`, so with `vllm` the ids go there too as
    `stop_token_ids`, explicitly rather than left to vLLM reading the generation config the engine
    starts from. Call before building the `GRPOTrainer`.
    """
    model.generation_config.eos_token_id = list(stop_ids)
    if preset.generation.backend == "vllm":
        args.generation_kwargs = {**(args.generation_kwargs or {}), "stop_token_ids": list(stop_ids)}


def compile_decoding(trainer, preset: Preset) -> None:
    """Let transformers compile the decode step of TRL's `generate` when `compiles(preset)`.

    TRL builds its `GenerationConfig` with `disable_compile=True`; without this the static cache
    would decode eager. `_compile_all_devices` lets transformers compile off CUDA as well (on a
    CPU with inductor), which it otherwise skips.
    """
    if preset.generation.backend != "hf" or not compiles(preset):
        return
    from transformers import CompileConfig

    config = trainer.generation_config
    config.disable_compile = False
    config.compile_config = config.compile_config or CompileConfig()
    config.compile_config._compile_all_devices = True
