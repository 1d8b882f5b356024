"""The typed preset tree: every key, its default and what it is for.

Presets are short YAML deltas from these defaults; OmegaConf merges them onto this schema, so an
unknown key gets "did you mean", a wrong type names the key, and `Literal` fields list the choices.
Rules that span several keys live in `eulerforge_trl.config.rules`.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

TINY_MODEL_NAME = "tiny-qwen3.5"


@dataclass
class LoraSection:
    """LoRA adapter. Leave the whole `lora:` section out (or `lora: null`) for full fine-tuning."""

    r: int = 16  # rank; 8-64 is typical
    alpha: int = 32  # scaling numerator (scale = alpha / r); 2*r is a common choice
    dropout: float = 0.05  # LoRA dropout; PPO turns every dropout off regardless
    target_modules: Any = "all-linear"  # "all-linear" or a list such as [q_proj, v_proj]


@dataclass
class DataSection:
    """Where the rows come from and what shape they have."""

    format: Literal["raw"] = "raw"  # raw = JSONL, one object per line
    path: str = ""  # training JSONL (relative paths are taken from the working directory)
    task: Literal["sft", "preference", "prompt_only"] = (
        "sft"  # sft {prompt,response}; preference {prompt,chosen,rejected}; prompt_only {prompt}
    )
    max_length: int = 512  # tokens of prompt+response; longer rows are truncated (SFT, DPO) or dropped (RM)
    max_prompt_length: int = 256  # PPO: prompts are cut to their last N tokens
    eval_path: str | None = None  # held-out JSONL of the same task (PPO: fresh prompts, sampled before and after)
    eval_split: float = 0.0  # else hold out this fraction of `path` (0 = no evaluation)


@dataclass
class RewardModelSection:
    """PPO only: the RM adapter + RewardHead trained by the `rm` stage, applied on the policy's base."""

    model_name: str | None = None  # base the RM was trained on; must be the policy's base (checked)
    checkpoint_path: str | None = ""  # the rm stage's final/; "" (or null) = random head, for debugging only


@dataclass
class PPOSection:
    """PPO hyper-parameters. Names follow TRL's former `PPOConfig` where one existed (in brackets)."""

    clip_range: float = 0.2  # [cliprange] policy ratio clip
    clip_range_value: float = 0.2  # [cliprange_value] value clip around the rollout values
    kl_coef: float = 0.05  # [kl_coef] weight of the per-token KL penalty to the reference
    kl_estimator: Literal["k1", "k2", "k3"] = (
        "k1"  # [kl_estimator] k1 = log-ratio, k2 = half its square, k3 = unbiased low-variance
    )
    epochs: int = 4  # [num_ppo_epochs] passes over each rollout batch
    num_mini_batches: int = 1  # [num_mini_batches] minibatches per epoch; must divide batch_size
    max_gen_len: int = 64  # [response_length] new tokens per response
    temperature: float = 1.0  # [temperature] sampling temperature, also applied to every logprob
    vf_coef: float = 0.1  # [vf_coef] weight of the value loss
    gamma: float = 1.0  # [gamma] discount
    lam: float = 0.95  # [lam] GAE lambda
    whiten_rewards: bool = False  # [whiten_rewards] whiten the shaped per-token rewards
    # scale RM scores to mean 0, std 1 under the SFT policy (see score_norm_samples), so that kl_coef and
    # missing_eos_penalty mean the same whatever the RM's scale; reward_mean still logs raw scores
    normalize_scores: bool = True
    # how many responses of the SFT policy (sampled from training prompts before step 1, over every
    # process) estimate that mean and std; more = a steadier scale (64 costs 8 rollouts at batch 8)
    score_norm_samples: int = 64
    missing_eos_penalty: float | None = 1.0  # [missing_eos_penalty] penalty for responses without EOS (null = none)
    # subtract = their RM score minus the penalty (TRL); replace = -penalty instead of the RM score, which
    # was read at a token the RM never saw last ("N+ implementation details"): use it when cut-off
    # answers still score well
    missing_eos_mode: Literal["subtract", "replace"] = "subtract"
    entropy_coef: float = 0.0  # entropy bonus weight (0 = off)
    # value_head = a head on the policy's own hidden states (no extra pass; the default: it learned as
    # well as `adapter` on the tiny pipeline at ~60% of the step time); adapter = own LoRA + head from the RM
    critic: Literal["value_head", "adapter"] = "value_head"
    sample_every: int = 10  # write sample generations to samples.jsonl every N steps (0 = never)
    num_samples: int = 4  # how many generations each time
    # held-out prompts (data.eval_path, or a data.eval_split fraction of data.path) sampled and scored
    # before the first step and after the last
    # (eval_reward_mean in metrics.jsonl, every generation in eval_samples.jsonl); 0 = all of them
    eval_prompts: int = 64
    save_merged: bool = False  # also write final/merged: the policy adapter merged into the base


@dataclass
class DPOSection:
    """DPO hyper-parameters (TRL `DPOConfig`)."""

    beta: float = 0.1  # strength of the implicit KL to the reference
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
    ] = "sigmoid"  # TRL DPO loss_type (exo_pair is left out: it needs label_smoothing > 0)


@dataclass
class TrainingSection:
    """Optimisation settings shared by every stage; `type` picks the stage."""

    type: Literal["sft", "rm", "ppo", "dpo"] = "sft"
    lr: float = 2e-4  # learning rate
    epochs: float = 1.0  # passes over the data (ignored when max_steps > 0)
    max_steps: int = -1  # optimizer steps (PPO: rollout batches); > 0 overrides epochs
    batch_size: int = 8  # per device (PPO: prompts per rollout batch)
    grad_accum: int = 1  # gradient accumulation steps (not used by PPO)
    seed: int = 42
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    # transformers schedulers that need no extra arguments; warmup comes from warmup_ratio
    lr_scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    max_grad_norm: float = 1.0
    logging_steps: int = 10  # write metrics every N steps (PPO: every step)
    save_steps: int = 100  # checkpoint every N steps; a rerun resumes from the last one
    save_total_limit: int = 2  # checkpoints kept
    gradient_checkpointing: bool = False  # saves memory, costs ~30% speed
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 on a GPU that has it, else fp32
    report_to: Any = field(default_factory=lambda: ["tensorboard"])  # transformers loggers
    reward_model: RewardModelSection = field(default_factory=RewardModelSection)
    ppo: PPOSection = field(default_factory=PPOSection)
    dpo: DPOSection = field(default_factory=DPOSection)


@dataclass
class Preset:
    """One stage's full configuration."""

    model_name: str = TINY_MODEL_NAME  # hub id, local directory (a stage's final/), or tiny-qwen3.5
    lora: LoraSection | None = None
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    output_dir: str | None = None  # default: outputs/<preset name>
