"""`generation:` mapped onto TRL's GRPOConfig: GRPO samples through TRL's own engines.

backend hf -> TRL's `generate` on the policy (with `generation.compile`: a static KV cache, which
transformers compiles on CUDA); backend vllm -> TRL's colocated vLLM generation on our
engine (`grpo_vllm`): built with `use_vllm` off, so TRL starts no engine of its own, then given ours,
which gets the merged LoRA weights pushed out of place.
"""

from __future__ import annotations

import torch

from ..config.schema import Preset
from ..errors import PresetError


def grpo_generation_args(preset: Preset) -> dict:
    """The GRPOConfig fields for `preset.generation`; settings TRL cannot honour are refused."""
    gen, grpo = preset.generation, preset.training.grpo
    if gen.merged_copy:
        raise PresetError(
            "generation.merged_copy: GRPO samples through TRL's generate on the policy itself, which has no "
            "such setting; leave it null (PPO reads it)"
        )
    if gen.backend == "hf":
        compile = torch.cuda.is_available() if gen.compile is None else gen.compile
        return {"use_vllm": False, "cache_implementation": "static" if compile else None}
    if gen.compile:
        raise PresetError(
            "generation.compile=true: hf only; the vllm engine compiles its own decoding unless "
            "generation.vllm_enforce_eager=true; leave generation.compile null"
        )
    return {
        "use_vllm": False,  # TRL starts no engine: `grpo_vllm.install_vllm_engine` hands it ours and turns this on
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": gen.vllm_gpu_memory_utilization,
        "vllm_max_model_length": preset.data.max_prompt_length + grpo.max_completion_length,
        "vllm_enable_sleep_mode": False,
        "vllm_importance_sampling_correction": True,  # TRL's default: correct the sampler/trainer mismatch
    }
