"""The sections only some stages read, each with the checks of its keys.

`training.ppo`, `training.grpo` and `training.dpo` are read by their stage alone, and
`training.reward_model` by the stages that optimise a reward (`STAGES[...].reads`). Each section's
`problems(preset)` is called by `config.rules.preset_problems` only when the preset's stage reads
the section: a bad PPO value does not block an SFT run (a key set there only warns, unused).
`preset` is the whole `schema.Preset` (not imported here: schema imports this module).
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .fields import failed, setting


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

    def problems(self, preset) -> list[str]:
        t = preset.training
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # set by `accelerate launch` / torchrun
        per_step = t.batch_size * t.grad_accum * world
        n = self.num_generations
        return failed(
            (n >= 2, f"training.grpo.num_generations ({n}) must be >= 2"),
            (
                n < 2 or per_step % n == 0,
                f"training.grpo.num_generations ({n}) must divide the completions per step, "
                f"training.batch_size ({t.batch_size}) x training.grad_accum ({t.grad_accum}) x processes ({world}) "
                f"= {per_step}: set training.batch_size to a multiple of {n}",
            ),
            (self.beta >= 0, f"training.grpo.beta ({self.beta}) must be >= 0"),
            (self.epsilon > 0, f"training.grpo.epsilon ({self.epsilon}) must be > 0"),
            (
                self.epsilon_high is None or self.epsilon_high >= self.epsilon,
                f"training.grpo.epsilon_high ({self.epsilon_high}) must be >= training.grpo.epsilon ({self.epsilon})",
            ),
            (self.num_iterations >= 1, f"training.grpo.num_iterations ({self.num_iterations}) must be >= 1"),
            (
                self.max_completion_length >= 1,
                f"training.grpo.max_completion_length ({self.max_completion_length}) must be >= 1",
            ),
            (self.temperature > 0, f"training.grpo.temperature ({self.temperature}) must be > 0"),
            (0 < self.top_p <= 1, f"training.grpo.top_p ({self.top_p}) must be in (0, 1]"),
            (self.top_k >= 0, f"training.grpo.top_k ({self.top_k}) must be >= 0"),
            (
                self.repetition_penalty > 0,
                f"training.grpo.repetition_penalty ({self.repetition_penalty}) must be > 0",
            ),
            (self.sample_every >= 0, f"training.grpo.sample_every ({self.sample_every}) must be >= 0"),
        )


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

    def problems(self, preset) -> list[str]:
        # TRL's DPOTrainer raises a bare ValueError for this: it scores with lm_head.weight directly,
        # so an adapter on lm_head would never train
        tm = preset.lora.target_modules if preset.lora is not None else None
        return failed(
            (self.beta > 0, f"training.dpo.beta ({self.beta}) must be > 0"),
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
