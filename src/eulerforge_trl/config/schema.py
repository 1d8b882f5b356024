"""The typed preset tree: every key, its default and what it is for.

Presets are short YAML deltas from these defaults; OmegaConf merges them onto this schema, so an
unknown key gets "did you mean", a wrong type names the key, and `Literal` fields list the choices.
Each field's doc is machine-readable (`doc_of`), so `eulerforge presets --explain KEY` prints it.
Rules that span several keys live in `eulerforge_trl.config.rules`.
"""

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

TINY_MODEL_NAME = "tiny-qwen3.5"


def setting(default: Any = MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A schema field and its doc: what it does and a rule of thumb (`eulerforge presets --explain`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def doc_of(section: type, name: str) -> str:
    """The doc of field `name` of a schema dataclass."""
    return section.__dataclass_fields__[name].metadata.get("doc", "")


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
    task: Literal["sft", "preference", "prompt_only"] = setting(
        "sft",
        "row shape, one per stage: sft {prompt, response} (SFT); preference {prompt, chosen, rejected} "
        "(RM, DPO); prompt_only {prompt} (PPO, GRPO); or TRL's conversational forms of each",
    )
    assistant_turns: Literal["all", "last"] = setting(
        "all",
        "SFT on conversations: which assistant turns carry the loss. all = every assistant message of a "
        "multi-turn conversation (TRL's assistant-only loss); last = only the final answer (the rest is prompt). "
        "Plain-text rows always train the response",
    )
    max_length: int = setting(
        512, "tokens of prompt + response; longer rows are cut at the end (SFT, DPO) or dropped (RM)"
    )
    max_prompt_length: int = setting(256, "PPO only: prompts are cut to their last N tokens")
    eval_path: str | None = setting(
        None,
        "held-out data of the same task, any source path takes, read with the same subset and columns "
        "(PPO: prompts sampled before and after training); null = use eval_split",
    )
    eval_path_split: str | None = setting(
        None, "the split of eval_path (e.g. test when eval_path names the same hub dataset); null = split"
    )
    eval_split: float = setting(
        0.0, "without eval_path, hold out this fraction of path (0 = no evaluation); 0.02-0.1 is typical"
    )


@dataclass
class RewardModelSection:
    """PPO and GRPO: the RM adapter + RewardHead trained by the `rm` stage, applied on the policy's base."""

    model_name: str | None = setting(
        None, "the base the RM was trained on; when set it must be model_name (one base in memory); null = not checked"
    )
    checkpoint_path: str | None = setting(
        "",
        "the rm stage's final/ directory; '' (or null) = no RM when training.reward_funcs are given, "
        "else a random RewardHead, for debugging only",
    )
    weight: float = setting(1.0, "weight of the RM score in the total reward (beside training.reward_weights)")
    separate: bool = setting(
        False,
        "load the RM as a model of its own (any base and tokenizer; responses re-tokenised from text) instead of "
        "an adapter on the policy's base; costs a second model in memory",
    )


@dataclass
class PPOSection:
    """PPO hyper-parameters. Names follow TRL's former `PPOConfig` where one existed (in brackets)."""

    clip_range: float = setting(0.2, "[cliprange] clip of the policy ratio pi/pi_old in the surrogate loss; 0.1-0.3")
    clip_range_value: float = setting(
        0.2, "[cliprange_value] clip of the new values around the rollout's values in the value loss"
    )
    kl_coef: float = setting(
        0.05,
        "[kl_coef] weight of the per-token KL penalty to the reference (the SFT model) in the rewards; "
        "higher stays closer to it, lower chases the RM (0.02-0.2 with normalised scores)",
    )
    kl_estimator: Literal["k1", "k2", "k3"] = setting(
        "k1",
        "[kl_estimator] per-token estimate of KL(pi || pi_ref) from r = log pi(t) - log pi_ref(t) of the "
        "sampled token t (Schulman's k1/k2/k3): k1 = r, unbiased, can be negative, high variance; "
        "k2 = r^2 / 2, >= 0, biased (exact only to second order), low variance; "
        "k3 = exp(-r) - 1 + r, >= 0, unbiased, lower variance than k1",
    )
    epochs: int = setting(4, "[num_ppo_epochs] optimisation passes over each rollout batch; 1-4")
    num_mini_batches: int = setting(
        1, "[num_mini_batches] minibatches per epoch; must divide training.batch_size; raise it to save memory"
    )
    max_gen_len: int = setting(
        64, "[response_length] new tokens per sampled response; a response that reaches it without EOS is penalised"
    )
    temperature: float = setting(
        1.0, "[temperature] sampling temperature, also applied to every logprob (old, new and reference)"
    )
    vf_coef: float = setting(0.1, "[vf_coef] weight of the value loss in the total loss")
    gamma: float = setting(1.0, "[gamma] discount of later rewards in GAE; 1.0 for a score at the last token")
    lam: float = setting(0.95, "[lam] GAE lambda: 1 = Monte-Carlo returns (high variance), 0 = one-step TD")
    whiten_rewards: bool = setting(False, "[whiten_rewards] whiten the shaped per-token rewards before GAE")
    normalize_scores: bool = setting(
        True,
        "scale RM scores to mean 0, std 1 under the SFT policy (see score_norm_samples), so kl_coef and "
        "missing_eos_penalty mean the same whatever the RM's scale; reward_mean still logs raw scores",
    )
    score_norm_samples: int = setting(
        64,
        "responses of the SFT policy (sampled from training prompts before step 1, over every process) "
        "that estimate that mean and std; more = a steadier scale (64 costs 8 rollouts at batch 8)",
    )
    missing_eos_penalty: float | None = setting(
        1.0, "[missing_eos_penalty] penalty for a response without EOS (see missing_eos_mode); null = none"
    )
    missing_eos_mode: Literal["subtract", "replace"] = setting(
        "subtract",
        "subtract = the RM score minus the penalty (TRL); replace = -penalty instead of the RM score, which "
        "was read at a token the RM never saw last (N+ implementation details): use it when cut-off "
        "answers still score well",
    )
    entropy_coef: float = setting(0.0, "weight of an entropy bonus in the policy loss (0 = off); try 0.001-0.01")
    critic: Literal["value_head", "adapter"] = setting(
        "value_head",
        "value_head = a head on the policy's own hidden states (no extra pass; learned as well as adapter on "
        "the tiny pipeline at ~60% of the step time); adapter = its own LoRA + head, initialised from the RM",
    )
    sample_every: int = setting(10, "write sample generations to samples.jsonl every N steps (0 = never)")
    num_samples: int = setting(4, "generations written each time")
    eval_prompts: int = setting(
        64,
        "held-out prompts (data.eval_path, or a data.eval_split fraction of data.path) sampled and scored "
        "before the first step and after the last (eval_reward_mean, eval_samples.jsonl); 0 = all of them",
    )
    save_merged: bool = setting(False, "also write final/merged: the policy adapter merged into the base")


@dataclass
class GRPOSection:
    """GRPO hyper-parameters. Each key is the TRL `GRPOConfig` field of the same name."""

    num_generations: int = setting(
        4,
        "completions sampled per prompt; their rewards are compared within the group (the advantage is the "
        "reward minus the group mean). >= 2; training.batch_size counts completions, so batch_size x processes "
        "x grad_accum must be a multiple of it (batch_size / num_generations prompts per step and process)",
    )
    beta: float = setting(
        0.04,
        "weight of the KL to the reference (the SFT model: adapters disabled) in the loss; 0 = no reference "
        "pass (faster, no kl_divergence logged). TRL's default is 0; 0.01-0.1 keeps the policy near the SFT model",
    )
    epsilon: float = setting(0.2, "clip of the ratio pi/pi_old (lower side, and upper unless epsilon_high); 0.1-0.3")
    epsilon_high: float | None = setting(None, "upper clip of the ratio; null = epsilon (DAPO uses 0.28)")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = setting(
        "dapo",
        "how token losses are averaged (TRL's loss_type): dapo = over every token of the batch (no length bias, "
        "TRL's default); grpo = per sequence, then over sequences (favours short good answers); dr_grpo = over "
        "a constant (max_completion_length)",
    )
    scale_rewards: Literal["group", "batch", "none"] = setting(
        "group",
        "divide the advantages by the reward std of the group (GRPO), of the whole batch, or not at all (Dr. GRPO)",
    )
    num_iterations: int = setting(
        1, "optimisation passes over each generated batch (mu in the paper); 1 = on-policy, pi_old = pi"
    )
    max_completion_length: int = setting(64, "new tokens per completion; a longer answer is cut off there")
    mask_truncated_completions: bool = setting(
        False, "leave completions that hit max_completion_length without EOS out of the loss (DAPO)"
    )
    temperature: float = setting(1.0, "sampling temperature, also applied to every logprob")
    top_p: float = setting(1.0, "nucleus sampling; 1.0 = off (sample from the full distribution)")
    top_k: int = setting(0, "top-k sampling; 0 = off")
    repetition_penalty: float = setting(
        1.0, "> 1 discourages repeated tokens while sampling; 1.0 = pure sampling (the checkpoint's own is ignored)"
    )
    entropy_coef: float = setting(0.0, "weight of an entropy bonus in the loss (0 = off)")
    sample_every: int = setting(10, "write sample generations to samples.jsonl every N steps (0 = never)")
    num_samples: int = setting(4, "generations written each time")


@dataclass
class DPOSection:
    """DPO hyper-parameters (TRL `DPOConfig`)."""

    beta: float = setting(
        0.1, "strength of the implicit KL to the reference: higher keeps the policy closer to it; 0.01-0.5"
    )
    loss_type: Literal[
        "sigmoid",
        "hinge",
        "ipo",
        "nca_pair",
        "robust",
        "bco_pair",
        "sppo_hard",
        "aot",
        "aot_unpaired",
        "apo_zero",
        "apo_down",
        "discopop",
        "sft",
        "sigmoid_norm",
    ] = setting(
        "sigmoid", "TRL's DPO loss_type; sigmoid is the DPO paper's (exo_pair is left out: it needs label_smoothing)"
    )


@dataclass
class GenerationSection:
    """How PPO, GRPO and PPO's held-out evaluation sample responses (the rollout engine)."""

    backend: Literal["hf", "vllm"] = setting(
        "hf",
        "hf = transformers' generate on the training model (the LoRA active); vllm = a vLLM engine in the "
        "training process (colocated, no server) holding its own copy of the weights, the policy's merged "
        "weights pushed to it after every optimizer step (pip install 'eulerforge-trl[vllm]', or "
        "make install-vllm on a CPU). Responses are the engine's, log-probs always the trainer's",
    )
    compile: bool | None = setting(
        None,
        "hf only: decode with a static KV cache that transformers compiles (CUDA graphs on a GPU; one-off "
        "compile of about a minute, then several times faster per token); null = on with CUDA, off elsewhere",
    )
    vllm_gpu_memory_utilization: float = setting(
        0.3,
        "vllm only: share of the GPU's memory the engine claims for weights and KV cache (TRL's name); on "
        "vLLM's CPU build the KV cache is sized for the batch instead and this is not read",
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


@dataclass
class TrainingSection:
    """Optimisation settings shared by every stage; `type` picks the stage."""

    type: Literal["sft", "rm", "ppo", "grpo", "dpo"] = setting(
        "sft",
        "the stage this preset trains; it reads training.<type> (ppo and grpo also training.reward_model, "
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
    ppo: PPOSection = setting(doc="PPO hyper-parameters (read by the ppo stage only)", factory=PPOSection)
    grpo: GRPOSection = setting(doc="GRPO hyper-parameters (read by the grpo stage only)", factory=GRPOSection)
    dpo: DPOSection = setting(doc="DPO hyper-parameters (read by the dpo stage only)", factory=DPOSection)


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
    data: DataSection = setting(doc="training and held-out data", factory=DataSection)
    training: TrainingSection = setting(doc="the stage and its optimisation", factory=TrainingSection)
    generation: GenerationSection = setting(
        doc="the rollout engine of PPO and GRPO (hf or vllm)", factory=GenerationSection
    )
    output_dir: str | None = setting(None, "where the stage writes; null = outputs/<preset name>; --output-dir wins")
