"""GRPO's `generation.backend: vllm`: TRL's colocated vLLM generation on our engine and our weight push.

TRL starts its colocated engine inside `GRPOTrainer.__init__` as `LLM(model=model.name_or_path)`
with fixed engine arguments, and pushes LoRA weights by merging the adapter into the base in place
and unmerging it after (`merge_adapter()` / `unmerge_adapter()`). Neither fits here:
`model.name_or_path` may be a built-in name or an adapter-only `final/` that vLLM cannot load; the
in-place merge leaves bf16 rounding in the base, which is GRPO's reference (adapters off) and the
RM adapter's base; the model's `load_weights` it pushes with fails on vLLM's CPU build; and its
engine has no dtype, eager mode or CPU KV-cache size of ours.

So the trainer is built with `use_vllm` off (TRL starts no engine), and `install_vllm_engine` then
puts it in the state TRL's own `__init__` leaves with `use_vllm` on: `trainer.vllm_generation` is
TRL's `VLLMGeneration` (its `generate`, sampling parameters and log-prob extraction unchanged) whose
engine is ours (`ColocatedEngine`, the one PPO's `vllm` sampler runs) and whose `sync_weights` is our
out-of-place push. TRL's importance-sampling correction of the sampler/trainer mismatch
(`vllm_importance_sampling_correction`, on) applies as with its own engine.
"""

from __future__ import annotations

from trl.generation.vllm_generation import VLLMGeneration

from ..config.schema import Preset
from ..generation.vllm_engine import ColocatedEngine
from .policy_final import POLICY


class EngineGeneration(VLLMGeneration):
    """TRL's colocated generation, sampling from `engine` and syncing through its push."""

    def __init__(self, trainer, engine: ColocatedEngine):
        self.engine = engine
        args = trainer.args
        super().__init__(  # the arguments GRPOTrainer passes its own (colocate mode, one engine per process)
            model=trainer.model,
            accelerator=trainer.accelerator,
            processing_class=trainer.processing_class,
            mode="colocate",
            gpu_memory_utilization=args.vllm_gpu_memory_utilization,
            max_model_length=args.vllm_max_model_length,
            max_num_seqs=args.per_device_train_batch_size * args.steps_per_generation,
            repetition_penalty=trainer.repetition_penalty,
            temperature=trainer.temperature,
            top_p=trainer.top_p,
            top_k=trainer.top_k,
            min_p=trainer.min_p,
            max_completion_length=trainer.max_completion_length,
            logprobs=0,  # the sampled tokens' log-probs, for the importance-sampling correction
            generation_kwargs=args.generation_kwargs,
        )

    def _init_vllm(self):
        self.llm = self.engine.llm

    def sync_weights(self):
        self.engine.push()


def install_vllm_engine(trainer, preset: Preset) -> ColocatedEngine:
    """Start our engine on the trainer's policy and hand it to TRL as its colocated vLLM generation.

    Call right after building the `GRPOTrainer` (whose config has `use_vllm` off and the vllm fields
    `grpo_generation_args` sets).
    """
    args, accelerator, gen = trainer.args, trainer.accelerator, preset.generation
    engine = ColocatedEngine(
        trainer.model,
        trainer.processing_class,
        adapter=POLICY,
        seed=preset.training.seed + accelerator.process_index,
        max_model_len=args.vllm_max_model_length,
        max_num_seqs=args.per_device_train_batch_size * args.steps_per_generation,
        gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        dtype=gen.vllm_dtype,
        enforce_eager=gen.vllm_enforce_eager,
        distributed=accelerator.num_processes > 1,
    )
    trainer.vllm_generation = EngineGeneration(trainer, engine)
    trainer.use_vllm = args.use_vllm = True
    trainer._last_loaded_step = -1  # TRL pushes before its first generation
    return engine
