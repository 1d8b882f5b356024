"""The sections only some stages read, each with the checks of its keys.

`training.ppo` and the TRL stages' sections (`training.sft`, `training.rm`, `training.grpo`,
`training.dpo`, ...: `TRLSection`, which also take any field of the stage's TRL config class, see
`config.trl_fields`) are read by their stage alone, and
`training.reward_model` by the stages that optimise a reward (`STAGES[...].reads`). Each section's
`problems(preset)` is called by `config.rules.preset_problems` only when the preset's stage reads
the section: a bad PPO value does not block an SFT run (a key set there only warns, unused).
`preset` is the whole `schema.Preset` (not imported here: schema imports this module).
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .fields import failed, setting
from .trl_fields import PASSTHROUGH


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

    def problems(self, preset) -> list[str]:
        named = self.model_name
        return failed(
            (
                not named or self.separate or same_model(named, preset.model_name),
                f"training.reward_model.model_name ({named}) differs from model_name ({preset.model_name}): the "
                f"reward adapter runs on the policy's base, so train the RM on {preset.model_name} (or leave this "
                "key out)",
            ),
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
    target_kl: float | None = setting(
        None,
        "[target] adaptive KL control (Ziegler et al. 2019, TRL's former AdaptiveKLController): after each step "
        "kl_coef is multiplied by 1 + clip(KL / target_kl - 1, -0.2, 0.2) x samples / kl_horizon, so the "
        "sequence KL to the reference (kl_divergence) tends to target_kl; kl_coef is its start. null = fixed kl_coef. "
        "Which target: the kl_divergence (nats per response) you accept at the end, read off a short run with a "
        "fixed kl_coef: below where that run ends holds the policy nearer the reference (less reward, less drift "
        "and reward hacking of an RM), above it lets the policy move further; 0.5-2 suits a few dozen steps of a "
        "LoRA policy (the shipped PPO presets hold 1.0). Set kl_horizon near the samples per step (the coefficient "
        "then moves up to 20% a step), and judge the hold by the mean kl_divergence over the last 10% of steps "
        "(one step's is noisy)",
    )
    use_kl_loss: bool = setting(
        False,
        "put the KL to the reference in the policy loss (kl_coef x the mean per-token kl_estimator over response "
        "tokens, differentiated through the current policy; GRPO's and verl's use_kl_loss) instead of subtracting "
        "it from the rewards; the rewards are then the score alone. Needs kl_estimator k2 or k3 (k1's gradient "
        "is zero in expectation); target_kl adapts the coefficient either way",
    )
    kl_horizon: int = setting(
        10000,
        "[horizon] samples over which the adaptive controller corrects a KL error (smaller = faster): a step "
        "moves kl_coef by at most 20% x samples / kl_horizon, so a run of a few dozen steps needs one near the "
        "samples per step (training.batch_size)",
    )
    score_clip: float | None = setting(
        None,
        "clip the scores PPO optimises (after normalisation) to [-score_clip, score_clip] before the KL shaping: "
        "one outlier reward then cannot dominate a batch; null = no clip (3-10 with normalised scores)",
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
    importance_sampling_correction: bool = setting(
        True,
        "(TRL GRPO's vllm_importance_sampling_correction) when the tokens come from an engine that is not the "
        "trainer's weights (generation.backend vllm, or the hf merged copy: in bf16 it rounds small LoRA deltas "
        "away), weight each token's policy loss by pi_old / pi_engine, truncated or masked as "
        "importance_sampling_mode says, so PPO optimises the policy it trains; logged as generation/is_weight_mean "
        "and generation/is_capped_fraction beside generation/logprob_gap. A factor of its own: the ratio pi / pi_old "
        "is still 1 on the first pass",
    )
    importance_sampling_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"] = setting(
        "token_truncate",
        "(TRL's vllm_importance_sampling_mode) token_truncate = each token's ratio capped at importance_sampling_cap; "
        "token_mask = a token above the cap is dropped; sequence_* = one ratio per response (the product of its "
        "tokens'), capped or dropped. TRL's GRPO defaults to sequence_mask, which drops a whole long response for "
        "a small per-token gap; PPO's per-token advantages take the per-token weight",
    )
    importance_sampling_cap: float = setting(
        3.0, "(TRL's vllm_importance_sampling_clip_max) the upper bound of the importance weight; 2-5 is typical"
    )
    critic: Literal["value_head", "adapter"] = setting(
        "value_head",
        "value_head = a head on the policy's own hidden states (no extra pass; not detached, so the value loss "
        "also trains the policy adapter; learned as well as adapter on the tiny pipeline at ~60% of the step "
        "time); adapter = its own LoRA + head, initialised from the RM, sharing no weights with the policy",
    )
    sample_every: int = setting(10, "write sample generations to samples.jsonl every N steps (0 = never)")
    num_samples: int = setting(4, "generations written each time")
    eval_prompts: int = setting(
        64,
        "held-out prompts (data.eval_path, or a data.eval_split fraction of data.path) sampled and scored "
        "before the first step and after the last (eval_reward_mean, eval_samples.jsonl); 0 = all of them",
    )
    save_merged: bool = setting(False, "also write final/merged: the policy adapter merged into the base")

    def problems(self, preset) -> list[str]:
        batch = preset.training.batch_size
        return failed(
            (self.kl_coef >= 0, f"training.ppo.kl_coef ({self.kl_coef}) must be >= 0"),
            (self.vf_coef >= 0, f"training.ppo.vf_coef ({self.vf_coef}) must be >= 0"),
            (self.sample_every >= 0, f"training.ppo.sample_every ({self.sample_every}) must be >= 0 (0 = never)"),
            (self.clip_range > 0, f"training.ppo.clip_range ({self.clip_range}) must be > 0"),
            (self.clip_range_value > 0, f"training.ppo.clip_range_value ({self.clip_range_value}) must be > 0"),
            (self.epochs >= 1, f"training.ppo.epochs ({self.epochs}) must be >= 1"),
            (self.target_kl is None or self.target_kl > 0, f"training.ppo.target_kl ({self.target_kl}) must be > 0"),
            (
                not self.use_kl_loss or self.kl_estimator != "k1",
                "training.ppo.use_kl_loss needs training.ppo.kl_estimator k3 (GRPO's) or k2: k1 = log pi - log pi_ref "
                "has a zero expected gradient as a loss",
            ),
            (self.kl_horizon >= 1, f"training.ppo.kl_horizon ({self.kl_horizon}) must be >= 1"),
            (
                self.importance_sampling_cap > 0,
                f"training.ppo.importance_sampling_cap ({self.importance_sampling_cap}) must be > 0",
            ),
            (
                self.score_clip is None or self.score_clip > 0,
                f"training.ppo.score_clip ({self.score_clip}) must be > 0",
            ),
            (self.max_gen_len >= 1, f"training.ppo.max_gen_len ({self.max_gen_len}) must be >= 1"),
            (self.temperature > 0, f"training.ppo.temperature ({self.temperature}) must be > 0"),
            (0 <= self.gamma <= 1, f"training.ppo.gamma ({self.gamma}) must be in [0, 1]"),
            (0 <= self.lam <= 1, f"training.ppo.lam ({self.lam}) must be in [0, 1]"),
            (
                self.num_mini_batches >= 1 and batch % self.num_mini_batches == 0,
                f"training.ppo.num_mini_batches ({self.num_mini_batches}) must divide training.batch_size ({batch})",
            ),
            (
                preset.training.grad_accum == 1,
                f"training.grad_accum ({preset.training.grad_accum}): PPO takes one optimizer step per minibatch and "
                "accumulates nothing; leave it at 1 and set training.ppo.num_mini_batches (fewer, larger minibatches)",
            ),
        )


@dataclass
class TRLSection:
    """A TRL stage's section: besides its own keys it takes any field of the stage's TRL config class
    (`config.trl_fields.TRL_CONFIGS`), checked against that dataclass when the preset loads."""

    passthrough: dict[str, Any] = field(
        default_factory=dict,
        metadata={"doc": "the TRL fields set in this section (not a key: write them beside the section's own)"},
    )

    def trl_args(self, names: Iterable[str]) -> dict[str, Any]:
        """The TRL config's fields this section sets: its own keys that are fields of the TRL class
        (`names`) under the same name, then the pass-through fields."""
        names = set(names)
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names and f.name != PASSTHROUGH}
        return {**own, **self.passthrough}


@dataclass
class SFTSection(TRLSection):
    """SFT: any field of TRL's `SFTConfig` (packing, completion_only_loss, optim, ...)."""

    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] | None = setting(
        None,
        "with packing: true, how rows are packed (TRL's field). bfd / bfd_split keep the packed rows apart "
        "(padding-free, by position ids), which a model with linear-attention layers (Qwen3.5's Gated DeltaNet, "
        "the tiny model's) can do only with the causal-conv1d and flash-linear-attention kernels on a GPU; "
        "wrapped packs them into one stream that attends across rows. null = TRL's bfd where the model keeps "
        "packed rows apart, else wrapped (said in the log)",
    )

    def trl_args(self, names: Iterable[str]) -> dict[str, Any]:
        # the runner sets packing_strategy: null is resolved against the loaded model
        return {k: v for k, v in super().trl_args(names).items() if k != "packing_strategy"}


@dataclass
class RMSection(TRLSection):
    """Reward model: any field of TRL's `RewardConfig` (center_rewards_coefficient, optim, ...)."""


@dataclass
class GRPOSection(TRLSection):
    """GRPO: any field of TRL's `GRPOConfig` (loss_type, epsilon, scale_rewards, top_p, ...); the keys
    below are those whose default or meaning we change, and our own."""

    num_generations: int = setting(
        4,
        "completions sampled per prompt; their rewards are compared within the group (the advantage is the "
        "reward minus the group mean). >= 2; training.batch_size counts completions, so batch_size x processes "
        "x grad_accum must be a multiple of it (batch_size / num_generations prompts per step and process). "
        "TRL's default is 8; 4 lets a CPU-sized batch hold several prompts",
    )
    beta: float = setting(
        0.04,
        "weight of the KL to the reference (the SFT model: adapters disabled) in the loss; 0 = no reference "
        "pass (faster, no kl_divergence logged). TRL's default is 0; 0.01-0.1 keeps the policy near the SFT model",
    )
    max_completion_length: int = setting(
        64,
        "new tokens per completion; a longer answer is cut off there. TRL's default is 512; short answers keep "
        "a CPU step short (data.max_prompt_length cuts the prompts, as PPO's)",
    )
    sample_every: int = setting(10, "write sample generations to samples.jsonl every N steps (0 = never)")
    num_samples: int = setting(4, "generations written each time")

    def problems(self, preset) -> list[str]:
        t = preset.training
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # set by `accelerate launch` / torchrun
        per_step = t.batch_size * t.grad_accum * world
        n = self.num_generations
        trl = self.passthrough
        epsilon, epsilon_high = trl.get("epsilon", 0.2), trl.get("epsilon_high")  # TRL's defaults
        return failed(
            (n >= 2, f"training.grpo.num_generations ({n}) must be >= 2"),
            (
                n < 2 or per_step % n == 0,
                f"training.grpo.num_generations ({n}) must divide the completions per step, "
                f"training.batch_size ({t.batch_size}) x training.grad_accum ({t.grad_accum}) x processes ({world}) "
                f"= {per_step}: set training.batch_size to a multiple of {n}",
            ),
            (self.beta >= 0, f"training.grpo.beta ({self.beta}) must be >= 0"),
            (epsilon > 0, f"training.grpo.epsilon ({epsilon}) must be > 0"),
            (
                epsilon_high is None or epsilon_high >= epsilon,
                f"training.grpo.epsilon_high ({epsilon_high}) must be >= training.grpo.epsilon ({epsilon})",
            ),
            (
                trl.get("num_iterations", 1) >= 1,
                f"training.grpo.num_iterations ({trl.get('num_iterations')}) must be >= 1",
            ),
            (
                self.max_completion_length >= 1,
                f"training.grpo.max_completion_length ({self.max_completion_length}) must be >= 1",
            ),
            (trl.get("temperature", 1.0) > 0, f"training.grpo.temperature ({trl.get('temperature')}) must be > 0"),
            (0 < trl.get("top_p", 1.0) <= 1, f"training.grpo.top_p ({trl.get('top_p')}) must be in (0, 1]"),
            (trl.get("top_k", 0) >= 0, f"training.grpo.top_k ({trl.get('top_k')}) must be >= 0"),
            (
                trl.get("repetition_penalty", 1.0) > 0,
                f"training.grpo.repetition_penalty ({trl.get('repetition_penalty')}) must be > 0",
            ),
            (self.sample_every >= 0, f"training.grpo.sample_every ({self.sample_every}) must be >= 0"),
        )


@dataclass
class DPOSection(TRLSection):
    """DPO: any field of TRL's `DPOConfig` (loss_type, loss_weights, label_smoothing, ...); the keys
    below are checked or mapped here."""

    beta: float = setting(
        0.1,
        "strength of the implicit KL to the reference: higher keeps the policy closer to it; 0.01-0.5 "
        "(TRL's field and default; declared here to be checked: > 0)",
    )
    rpo_alpha: float | None = setting(
        None,
        "RPO (Pang et al. 2024): add rpo_alpha x the NLL of the chosen response to the preference loss. TRL 1.16's "
        "DPOConfig has no such field and spells it as one more loss, sft, in loss_type with rpo_alpha its entry of "
        "loss_weights (the others weigh 1 unless loss_weights says); trl_config.json records both; null = off",
    )

    def problems(self, preset) -> list[str]:
        # TRL's DPOTrainer raises a bare ValueError for this: it scores with lm_head.weight directly,
        # so an adapter on lm_head would never train
        tm = preset.lora.target_modules if preset.lora is not None else None
        losses = self.passthrough.get("loss_type", [])
        return failed(
            (self.beta > 0, f"training.dpo.beta ({self.beta}) must be > 0"),
            (
                self.rpo_alpha is None or self.rpo_alpha >= 0,
                f"training.dpo.rpo_alpha ({self.rpo_alpha}) must be >= 0",
            ),
            (  # TRL's DPOTrainer raises this once the model has loaded
                "exo_pair" not in losses or self.passthrough.get("label_smoothing", 0.0) > 0,
                "training.dpo.loss_type exo_pair needs training.dpo.label_smoothing > 0 (the EXO paper uses 1e-3)",
            ),
            (
                self.rpo_alpha is None or "sft" not in losses,
                "training.dpo.rpo_alpha adds the sft loss, and training.dpo.loss_type has one already: set one of them",
            ),
            (
                not (isinstance(tm, list) and "lm_head" in tm),
                "lora.target_modules includes lm_head, which DPO cannot train (TRL computes log-probabilities "
                "from lm_head.weight directly): leave lm_head out",
            ),
        )


def same_model(a: str, b: str) -> bool:
    """Whether two `model_name` values name the same model: local directories compared by their
    absolute path, anything else (hub ids, built-in names, paths not yet written) as normalised text.
    Only the file system is read: no model is loaded (config stays free of torch)."""
    return _model_key(a) == _model_key(b)


def _model_key(name: str) -> str:
    path = Path(name)
    return str(path.resolve()) if path.is_dir() else os.path.normpath(name)
