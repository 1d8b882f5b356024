"""The sections of the rloo and kto stages: TRL's RLOOConfig and KTOConfig fields (`TRLSection`
pass-through), the keys whose default the stage changes, our own keys, and the checks of each.

`preset` in `problems(preset)` is the whole `schema.Preset` (not imported here: schema imports this module).
"""

import os
from dataclasses import dataclass

from .fields import failed, setting
from .stage_sections import TRLSection


@dataclass
class RLOOSection(TRLSection):
    """RLOO: any field of TRL's `RLOOConfig` (beta, normalize_advantages, reward_clip_range, epsilon, ...);
    the keys below are those whose default we change, and our own."""

    num_generations: int = setting(
        4,
        "completions sampled per prompt; each one's baseline is the mean reward of the other num_generations - 1 "
        "(leave-one-out). >= 2; training.batch_size counts completions, so batch_size x processes x grad_accum "
        "must be a multiple of it. TRL's default is 2; 4 gives each baseline three rewards",
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
        n, beta = self.num_generations, self.passthrough.get("beta", 0.05)  # TRL's default beta
        return failed(
            (n >= 2, f"training.rloo.num_generations ({n}) must be >= 2: the baseline is the other completions"),
            (
                n < 2 or per_step % n == 0,
                f"training.rloo.num_generations ({n}) must divide the completions per step, "
                f"training.batch_size ({t.batch_size}) x training.grad_accum ({t.grad_accum}) x processes ({world}) "
                f"= {per_step}: set training.batch_size to a multiple of {n}",
            ),
            (beta >= 0, f"training.rloo.beta ({beta}) must be >= 0"),
            (
                self.max_completion_length >= 1,
                f"training.rloo.max_completion_length ({self.max_completion_length}) must be >= 1",
            ),
            (self.sample_every >= 0, f"training.rloo.sample_every ({self.sample_every}) must be >= 0"),
            no_lm_head_adapter(preset, "RLOO"),
        )


@dataclass
class KTOSection(TRLSection):
    """KTO: any field of TRL's `KTOConfig` (beta, desirable_weight, undesirable_weight, loss_type, ...)."""

    def problems(self, preset) -> list[str]:
        trl = self.passthrough
        batch, beta = preset.training.batch_size, trl.get("beta", 0.1)  # TRL's default beta
        # TRL's KTOTrainer raises bare ValueErrors for the next two: its KL estimate pairs each row with
        # another completion of the same batch, in the order the rows come
        estimates_kl = trl.get("loss_type", "kto") != "apo_zero_unpaired"
        sampling = trl.get("train_sampling_strategy", "sequential")
        return failed(
            (beta > 0, f"training.kto.beta ({beta}) must be > 0"),
            (
                not estimates_kl or batch >= 2,
                f"training.batch_size ({batch}): KTO estimates its KL term from the other rows of a batch, so it "
                "needs at least 2 rows per device; raise training.batch_size",
            ),
            (
                not estimates_kl or sampling == "sequential",
                f"training.kto.train_sampling_strategy ({sampling}): KTO pairs each row with its neighbour's "
                "completion for its KL term, so it reads the rows in order (the stage shuffles them once); "
                "leave it out",
            ),
            no_lm_head_adapter(preset, "KTO"),
        )


def no_lm_head_adapter(preset, stage: str) -> tuple[bool, str]:
    """The rule of the TRL stages that score with `lm_head.weight` directly (DPO, RLOO, KTO): an adapter
    on lm_head would never train, and TRL raises a bare ValueError for it."""
    tm = preset.lora.target_modules if preset.lora is not None else None
    return (
        not (isinstance(tm, list) and "lm_head" in tm),
        f"lora.target_modules includes lm_head, which {stage} cannot train (TRL computes log-probabilities "
        "from lm_head.weight directly): leave lm_head out",
    )
