"""The typed preset tree: every key, its default and what it is for.

Presets are short YAML deltas from these defaults; OmegaConf merges them onto this schema, so an
unknown key gets "did you mean", a wrong type names the key, and `Literal` fields list the choices.
Each field's doc is machine-readable (`doc_of`), so `eulerforge presets --explain KEY` prints it.
The sections only some stages read (`training.ppo`, `training.reward_model`, and the TRL stages'
`training.sft`, `training.rm`, `training.grpo`, `training.dpo`, ..., which also take any field of
the stage's TRL config class: `trl_fields.py`) live in `stage_sections.py`. A section's `problems(preset)` checks the
rules that span its keys; `eulerforge_trl.config.rules.preset_problems` calls those of the sections
the preset's stage reads.
"""

from dataclasses import dataclass
from typing import Any, Literal

from .fields import doc_of, failed, setting
from .rloo_kto_sections import KTOSection, RLOOSection
from .stage_sections import (
    DPOSection,
    GRPOSection,
    PPOSection,
    RewardModelSection,
    RMSection,
    SFTSection,
)

__all__ = [
    "TINY_MODEL_NAME",
    "DPOSection",
    "DataSection",
    "GRPOSection",
    "GenerationSection",
    "KTOSection",
    "LoraSection",
    "PPOSection",
    "Preset",
    "RLOOSection",
    "RMSection",
    "RewardModelSection",
    "SFTSection",
    "TrainingSection",
    "doc_of",
    "setting",
]

TINY_MODEL_NAME = "tiny-qwen3.5"


@dataclass
class LoraSection:
    """LoRA adapter. Leave the whole `lora:` section out (or `lora: null`) for full fine-tuning."""

    r: int = setting(16, "rank of the adapter matrices; 8-64 is typical, higher = more capacity and memory")
    alpha: int = setting(32, "scaling numerator (the update is scaled by alpha / r); 2*r is a common choice")
    dropout: float = setting(0.05, "dropout on the adapter's input; PPO turns every dropout off regardless")
    target_modules: Any = setting(
        "all-linear",
        "modules that get an adapter: 'all-linear' (every linear layer but lm_head) or a list such as "
        "[q_proj, v_proj]; DPO cannot train lm_head",
    )

    def problems(self, preset: "Preset") -> list[str]:
        tm = self.target_modules
        return failed(
            (self.r >= 1, f"lora.r ({self.r}) must be >= 1"),
            (0 <= self.dropout < 1, f"lora.dropout ({self.dropout}) must be in [0, 1)"),
            (
                tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(m, str) for m in tm)),
                f"lora.target_modules ({tm}) must be 'all-linear' or a list of module names",
            ),
        )


@dataclass
class DataSection:
    """Where the rows come from and what shape they have: a file, a save_to_disk directory or a hub dataset."""

    path: str = setting(
        "",
        "training data: a .jsonl, .json, .parquet or .csv file, a datasets save_to_disk directory, or a hub "
        "dataset name (owner/name; offline it is read from the HF cache). A relative path is taken from the "
        "working directory, and for a shipped preset one missing there is read from the package's own copy "
        "(examples/data/...)",
    )
    split: str = setting(
        "train",
        "the split of path, as datasets spells it: train, test, train[:1000], train[:10%]; a single file has "
        "one split, train",
    )
    subset: str | None = setting(None, "the hub dataset's configuration (load_dataset's name); null = its default")
    columns: dict[str, str] = setting(
        doc="the source's column names -> the task's, e.g. {question: prompt, answer: response} "
        "(--set data.columns.question=prompt); ShareGPT conversations and Alpaca instruction/input/output "
        "rows are recognised without it",
        factory=dict,
    )
    task: Literal["sft", "preference", "prompt_only", "unpaired_preference"] = setting(
        "sft",
        "row shape, one per stage: sft {prompt, response} (SFT); preference {prompt, chosen, rejected} "
        "(RM, DPO); prompt_only {prompt} (PPO, GRPO, RLOO); unpaired_preference {prompt, completion, label} "
        "(KTO; label true = desirable); or TRL's conversational forms of each",
    )
    assistant_turns: Literal["all", "last"] = setting(
        "all",
        "SFT on conversations: which assistant turns carry the loss. all = every assistant message of a "
        "multi-turn conversation (TRL's assistant-only loss); last = only the final answer (the rest is prompt). "
        "Plain-text rows always train the response",
    )
    max_length: int = setting(
        512,
        "tokens of prompt + response; the trainers cut or drop longer rows (SFT keeps a cut row while a response "
        "token is left; RM and DPO drop it), and the stage logs how many rows it dropped (none left: an error)",
    )
    max_prompt_length: int = setting(
        256, "PPO and GRPO: prompts are cut to their last N tokens (GRPO refuses a longer conversation)"
    )
    eval_path: str | None = setting(
        None,
        "held-out data of the same task, any source path takes, read with the same subset and columns "
        "(PPO, GRPO: prompts sampled and scored before and after training); null = use eval_split",
    )
    eval_path_split: str | None = setting(
        None, "the split of eval_path (e.g. test when eval_path names the same hub dataset); null = split"
    )
    eval_split: float = setting(
        0.0, "without eval_path, hold out this fraction of path (0 = no evaluation); 0.02-0.1 is typical"
    )

    def problems(self, preset: "Preset") -> list[str]:
        return failed(
            (bool(self.path), "data.path must name a JSONL file"),
            (0 <= self.eval_split < 1, f"data.eval_split ({self.eval_split}) must be in [0, 1)"),
            (self.max_length >= 8, f"data.max_length ({self.max_length}) must be >= 8"),
        )


@dataclass
class GenerationSection:
    """How PPO, GRPO and PPO's held-out evaluation sample responses (the rollout engine)."""

    backend: Literal["hf", "vllm"] = setting(
        "hf",
        "hf = transformers' generate on the training model (the LoRA active); vllm = a vLLM engine in the "
        "training process (colocated, no server) holding its own copy of the weights, the policy's merged "
        "weights (computed out of place: the base, the reference, is never touched) streamed into it after every "
        "optimizer step, PPO and GRPO alike, on GPUs and on vLLM's CPU build (pip install "
        "'eulerforge-trl[vllm]', or make install-vllm on a CPU). Responses are the engine's; the gap between its "
        "log-probs and the trainer's is logged as generation/logprob_gap (GRPO corrects for it with TRL's "
        "vllm_importance_sampling_correction)",
    )
    compile: bool | None = setting(
        None,
        "hf only: decode with a static KV cache that transformers compiles (CUDA graphs on a GPU; one-off "
        "compile of about a minute, then several times faster per token); true compiles on any device (inductor "
        "on a CPU, which needs a C compiler); null = on with CUDA, off elsewhere and on a quantized model "
        "(transformers does not compile bitsandbytes)",
    )
    merged_copy: bool | None = setting(
        None,
        "hf only, PPO's rollouts and held-out evaluation: sample from a plain copy of the model holding the "
        "policy's LoRA merged into its weights, refreshed after every optimizer step: no LoRA hooks while "
        "decoding (on a GPU they slow eager decoding several-fold), for the memory of the weights LoRA touches "
        "(the rest is shared; a sharded model's is gathered whole once); null = on with CUDA unless the model "
        "is quantized or sharded, off elsewhere. A LoRA on a tied lm_head or on embed_tokens gets the copy an "
        "untied head. The copy's log-prob of each sampled token is compared with the trainer's "
        "(generation/logprob_gap) and corrected for (training.ppo.importance_sampling_correction)",
    )
    vllm_gpu_memory_utilization: float = setting(
        0.3,
        "vllm only: share of the GPU's memory the engine claims for weights and KV cache (TRL's name; raise it "
        "when vLLM says the KV cache does not fit); on vLLM's CPU build the KV cache is sized for the batch "
        "instead and this is not read",
    )
    vllm_dtype: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto",
        "vllm only: the engine's weights dtype; auto = the training weights' dtype (then vLLM's tokens are what "
        "the trainer would sample); bf16 samples faster on a CPU at a small log-prob gap (logged as "
        "generation/logprob_gap)",
    )
    vllm_enforce_eager: bool = setting(
        False, "vllm only: no CUDA graphs / compilation in the engine (faster start-up, slower sampling)"
    )

    def problems(self, preset: "Preset") -> list[str]:
        return failed(
            (
                not self.compile or preset.quantization is None,
                f"generation.compile=true with quantization={preset.quantization}: transformers does not compile a "
                "bitsandbytes-quantized model (it would decode eagerly on a static cache); leave generation.compile null",
            ),
            (
                not self.compile or self.backend == "hf",
                "generation.compile=true: hf only; the vllm engine compiles its own decoding unless "
                "generation.vllm_enforce_eager=true; leave generation.compile null",
            ),
            (
                self.backend != "vllm" or preset.quantization is None,
                f"generation.backend=vllm with quantization={preset.quantization}: the engine holds a "
                "full-precision copy of the merged weights, which undoes the memory quantization saves; set "
                "generation.backend=hf or quantization=null",
            ),
            (
                not self.merged_copy or (self.backend == "hf" and preset.quantization is None),
                "generation.merged_copy=true "
                + (
                    "is for backend hf: the vllm engine holds a merged copy already"
                    if self.backend != "hf"
                    else f"with quantization={preset.quantization}: the copy would hold the merged weights in "
                    "full precision, which undoes the memory quantization saves; leave it null"
                ),
            ),
        )


@dataclass
class TrainingSection:
    """Optimisation settings shared by every stage; `type` picks the stage."""

    type: Literal["sft", "rm", "ppo", "grpo", "dpo", "rloo", "kto"] = setting(
        "sft",
        "the stage this preset trains; it reads training.<type> (ppo, grpo and rloo also training.reward_model, "
        "reward_funcs and reward_weights)",
    )
    lr: float = setting(2e-4, "learning rate; LoRA ~1e-4 to 2e-4 (SFT, RM), lower for PPO (~1e-5) and DPO (~5e-6)")
    epochs: float = setting(1.0, "passes over the data (ignored when max_steps > 0)")
    max_steps: int = setting(-1, "optimizer steps (PPO: rollout batches); > 0 overrides epochs")
    batch_size: int = setting(
        8,
        "rows per device per step (PPO: prompts per rollout batch per process; GRPO: completions per step "
        "and process, batch_size / training.grpo.num_generations prompts)",
    )
    grad_accum: int = setting(1, "batches accumulated per optimizer step (SFT, RM, DPO, GRPO); PPO: must be 1")
    seed: int = setting(42, "seeds the data split, the shuffling, the initialisation and the sampling")
    warmup_ratio: float = setting(0.0, "fraction of the steps over which the learning rate ramps up from 0")
    weight_decay: float = setting(0.0, "AdamW weight decay (every stage)")
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = setting("linear", "transformers learning-rate schedule (warmup from warmup_ratio)")
    max_grad_norm: float = setting(1.0, "gradients are clipped to this global norm")
    logging_steps: int = setting(10, "write metrics every N steps (PPO: also step 1 and the last)")
    save_steps: int = setting(100, "checkpoint (and evaluate) every N steps; a rerun resumes from the last one")
    save_total_limit: int = setting(2, "checkpoints kept; older ones are deleted")
    gradient_checkpointing: bool = setting(
        False, "recompute activations in the backward pass: less memory, ~30% slower"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        "auto", "weights and compute dtype; auto = bf16 on a GPU that has it, else fp32"
    )
    report_to: Any = setting(
        doc="loggers besides metrics.jsonl: a list of transformers' names (tensorboard, wandb, ...) or []",
        factory=lambda: ["tensorboard"],
    )
    reward_model: RewardModelSection = setting(doc="the learned reward model (PPO, GRPO)", factory=RewardModelSection)
    reward_funcs: list[str] = setting(
        doc="reward functions (PPO, GRPO), each 'package.module:function' or 'path/to/file.py:function' with TRL's "
        "signature fn(prompts, completions, **columns) -> list[float]; added to the RM score",
        factory=list,
    )
    reward_weights: list[float] | None = setting(
        None, "one weight per entry of training.reward_funcs, in order; null = 1.0 each"
    )
    sft: SFTSection = setting(doc="TRL's SFTConfig fields (read by the sft stage only)", factory=SFTSection)
    rm: RMSection = setting(doc="TRL's RewardConfig fields (read by the rm stage only)", factory=RMSection)
    ppo: PPOSection = setting(doc="PPO hyper-parameters (read by the ppo stage only)", factory=PPOSection)
    grpo: GRPOSection = setting(
        doc="GRPO hyper-parameters and TRL's GRPOConfig fields (read by the grpo stage only)", factory=GRPOSection
    )
    dpo: DPOSection = setting(
        doc="DPO hyper-parameters and TRL's DPOConfig fields (read by the dpo stage only)", factory=DPOSection
    )
    rloo: RLOOSection = setting(doc="TRL's RLOOConfig fields (read by the rloo stage only)", factory=RLOOSection)
    kto: KTOSection = setting(doc="TRL's KTOConfig fields (read by the kto stage only)", factory=KTOSection)

    def problems(self, preset: "Preset") -> list[str]:
        """The rules of the keys every stage reads; a stage's own section checks its keys itself."""
        weights = self.reward_weights
        return failed(
            (self.lr >= 0, f"training.lr ({self.lr}) must be >= 0"),
            (self.batch_size >= 1, f"training.batch_size ({self.batch_size}) must be >= 1"),
            (self.grad_accum >= 1, f"training.grad_accum ({self.grad_accum}) must be >= 1"),
            (self.max_steps > 0 or self.epochs > 0, "set training.max_steps > 0 or training.epochs > 0"),
            (self.logging_steps >= 1, f"training.logging_steps ({self.logging_steps}) must be >= 1"),
            (self.save_steps >= 1, f"training.save_steps ({self.save_steps}) must be >= 1"),
            (0 <= self.warmup_ratio < 1, f"training.warmup_ratio ({self.warmup_ratio}) must be in [0, 1)"),
            (
                weights is None or len(weights) == len(self.reward_funcs),
                f"training.reward_weights has {len(weights or [])} entries for {len(self.reward_funcs)} "
                "training.reward_funcs: give one weight per function, in order (or leave reward_weights out: 1.0 each)",
            ),
        )


@dataclass
class Preset:
    """One stage's full configuration."""

    model_name: str = setting(
        TINY_MODEL_NAME,
        "the base: built-in tiny-qwen3.5 or smollm2-135m-instruct, a local directory (a stage's final/), "
        "or a hub id such as Qwen/Qwen3.5-0.8B-Base",
    )
    attn_implementation: str | None = setting(
        None,
        "transformers' attention kernel for every model the stage loads: eager, sdpa, flash_attention_2 (needs the "
        "flash-attn package and a GPU), flex_attention, ...; null = transformers' default (sdpa where it can)",
    )
    lora: LoraSection | None = setting(None, "LoRA adapter; null (no lora: section) = full fine-tuning (SFT, DPO)")
    quantization: Literal["4bit", "8bit"] | None = setting(
        None,
        "QLoRA: the frozen base is loaded quantized by bitsandbytes (4bit = NF4 with bf16 compute and double "
        "quantization, about a quarter of bf16's memory; 8bit = LLM.int8), the LoRA adapters train in full "
        "precision on top and the reference stays the base with adapters disabled. Needs a lora: section and "
        "pip install 'eulerforge-trl[qlora]'; a merged final/ is merged into the full-precision base. "
        "null = the base in training.precision",
    )
    chat_template: str | None = setting(
        None,
        "the tokenizer's chat template for every tokenizer the stage loads (the policy's, the reference's, an "
        "RM's) and for final/, which keeps it: a Jinja file (relative paths from the working directory, else "
        "beside the preset; examples/chat_templates/simple.jinja works on any model, the tiny one included) or "
        "the template itself (any value holding {{ or {%). Conversational, ShareGPT and Alpaca rows need one; "
        "null = the tokenizer's own",
    )
    data: DataSection = setting(doc="training and held-out data", factory=DataSection)
    training: TrainingSection = setting(doc="the stage and its optimisation", factory=TrainingSection)
    generation: GenerationSection = setting(
        doc="the rollout engine of PPO and GRPO (hf or vllm)", factory=GenerationSection
    )
    output_dir: str | None = setting(None, "where the stage writes; null = outputs/<preset name>; --output-dir wins")
