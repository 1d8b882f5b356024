"""`generation:` mapped onto TRL's GRPOConfig: GRPO samples through TRL's own engines.

backend hf -> TRL's `generate` on the policy (with `generation.compile`: a static KV cache, which
transformers compiles on CUDA); backend vllm -> `use_vllm=True, vllm_mode="colocate"`: vLLM in the
training process, TRL pushing the merged LoRA weights into it with the model's `load_weights`.
"""

from __future__ import annotations

import torch

from ..config.schema import GenerationSection, Preset
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
    defaults = GenerationSection()
    for key in ("vllm_dtype", "vllm_enforce_eager", "compile"):
        if getattr(gen, key) != getattr(defaults, key):
            raise PresetError(
                f"generation.{key}: GRPO's vllm engine is TRL's, which has no such setting; leave it at "
                f"{getattr(defaults, key)!r} (PPO reads it)"
            )
    if not torch.cuda.is_available():
        raise PresetError(
            "generation.backend=vllm: GRPO runs TRL's colocated vLLM, which needs a GPU (on vLLM's CPU build "
            "TRL's weight push fails); use generation.backend=hf here, or the ppo stage, whose vllm engine runs "
            "on CPUs too"
        )
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": gen.vllm_gpu_memory_utilization,
        "vllm_max_model_length": preset.data.max_prompt_length + grpo.max_completion_length,
        "vllm_enable_sleep_mode": False,
    }
