"""Rules that span several preset keys; every broken rule is reported at once, with the fix."""

from __future__ import annotations

import operator
from collections.abc import Iterable

from ..stages import STAGES
from .fields import failed
from .schema import Preset

__all__ = ["SECTION_STAGE", "preset_problems", "readers_text", "unused_stage_keys"]


def _stage_sections() -> dict[str, tuple[str, ...]]:
    """Each stage-specific section (or key) and the stages that read it, from the stage table: a stage's
    `config_section`, its `reads`, and the section of each key a pipeline wires into it."""
    sections: dict[str, list[str]] = {}
    for name, stage in STAGES.items():
        wired = [key.rpartition(".")[0] for key in stage.inputs]
        for section in (stage.config_section, *stage.reads, *wired):
            if (
                section
                and section.startswith(("training.", "generation"))
                and name not in sections.setdefault(section, [])
            ):
                sections[section].append(name)
    return {section: tuple(names) for section, names in sections.items()}


# {"training.ppo": ("ppo",), "training.reward_model": ("ppo", "grpo"), ...}; other stages ignore them
SECTION_STAGE = _stage_sections()


def readers_text(stages: tuple[str, ...]) -> str:
    """("ppo",) -> "the ppo stage"; ("ppo", "grpo") -> "the ppo and grpo stages"."""
    if len(stages) == 1:
        return f"the {stages[0]} stage"
    return f"the {', '.join(stages[:-1])} and {stages[-1]} stages"


def preset_problems(p: Preset) -> list[str]:
    """Every broken rule of `p`, each with its values and the fix: the rules of the keys every stage
    reads, then those of the sections its stage reads (`Stage.config_section` and `Stage.reads`), each
    checked by the section's own `problems(preset)`; other stages' sections are not checked."""
    stage = STAGES[p.training.type]
    problems = failed(
        (bool(p.model_name), "model_name must not be empty"),
        (
            p.data.task == stage.data_task,
            f"data.task ({p.data.task}) does not fit training.type={stage.name}: set data.task={stage.data_task}",
        ),
        (
            p.lora is not None or not stage.needs_lora,
            f"the {stage.name} stage trains a LoRA adapter on the shared base: add a lora: section",
        ),
    )
<<<<<<< HEAD
    need(t.lr >= 0, f"training.lr ({t.lr}) must be >= 0")
    need(t.batch_size >= 1, f"training.batch_size ({t.batch_size}) must be >= 1")
    need(t.grad_accum >= 1, f"training.grad_accum ({t.grad_accum}) must be >= 1")
    need(t.max_steps > 0 or t.epochs > 0, "set training.max_steps > 0 or training.epochs > 0")
    need(t.logging_steps >= 1, f"training.logging_steps ({t.logging_steps}) must be >= 1")
    need(t.save_steps >= 1, f"training.save_steps ({t.save_steps}) must be >= 1")
    need(0 <= t.warmup_ratio < 1, f"training.warmup_ratio ({t.warmup_ratio}) must be in [0, 1)")
    need(0 <= p.data.eval_split < 1, f"data.eval_split ({p.data.eval_split}) must be in [0, 1)")
    need(p.data.max_length >= 8, f"data.max_length ({p.data.max_length}) must be >= 8")
    if p.lora is not None:
        need(p.lora.r >= 1, f"lora.r ({p.lora.r}) must be >= 1")
        need(0 <= p.lora.dropout < 1, f"lora.dropout ({p.lora.dropout}) must be in [0, 1)")
        tm = p.lora.target_modules
        need(
            tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(m, str) for m in tm)),
            f"lora.target_modules ({tm}) must be 'all-linear' or a list of module names",
        )
    if t.type in ("rm", "ppo", "grpo"):
        need(p.lora is not None, f"the {t.type} stage trains a LoRA adapter on the shared base: add a lora: section")
    if t.type == "ppo":
        need(ppo.kl_coef >= 0, f"training.ppo.kl_coef ({ppo.kl_coef}) must be >= 0")
        need(ppo.clip_range > 0, f"training.ppo.clip_range ({ppo.clip_range}) must be > 0")
        need(ppo.clip_range_value > 0, f"training.ppo.clip_range_value ({ppo.clip_range_value}) must be > 0")
        need(ppo.epochs >= 1, f"training.ppo.epochs ({ppo.epochs}) must be >= 1")
        need(ppo.max_gen_len >= 1, f"training.ppo.max_gen_len ({ppo.max_gen_len}) must be >= 1")
        need(ppo.temperature > 0, f"training.ppo.temperature ({ppo.temperature}) must be > 0")
        need(0 <= ppo.gamma <= 1, f"training.ppo.gamma ({ppo.gamma}) must be in [0, 1]")
        need(0 <= ppo.lam <= 1, f"training.ppo.lam ({ppo.lam}) must be in [0, 1]")
        need(
            ppo.num_mini_batches >= 1 and t.batch_size % ppo.num_mini_batches == 0,
            f"training.ppo.num_mini_batches ({ppo.num_mini_batches}) must divide training.batch_size ({t.batch_size})",
        )
        need(
            t.grad_accum == 1,
            f"training.grad_accum ({t.grad_accum}): PPO takes one optimizer step per minibatch and accumulates "
            "nothing; leave it at 1 and set training.ppo.num_mini_batches (fewer, larger minibatches) instead",
        )
    if t.type == "grpo":
        grpo = t.grpo
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # set by `accelerate launch` / torchrun
        per_step = t.batch_size * t.grad_accum * world
        need(grpo.num_generations >= 2, f"training.grpo.num_generations ({grpo.num_generations}) must be >= 2")
        need(
            grpo.num_generations < 2 or per_step % grpo.num_generations == 0,
            f"training.grpo.num_generations ({grpo.num_generations}) must divide the completions per step, "
            f"training.batch_size ({t.batch_size}) x training.grad_accum ({t.grad_accum}) x processes ({world}) "
            f"= {per_step}: set training.batch_size to a multiple of {grpo.num_generations}",
        )
        need(grpo.beta >= 0, f"training.grpo.beta ({grpo.beta}) must be >= 0")
        need(grpo.epsilon > 0, f"training.grpo.epsilon ({grpo.epsilon}) must be > 0")
        need(
            grpo.epsilon_high is None or grpo.epsilon_high >= grpo.epsilon,
            f"training.grpo.epsilon_high ({grpo.epsilon_high}) must be >= training.grpo.epsilon ({grpo.epsilon})",
        )
        need(grpo.num_iterations >= 1, f"training.grpo.num_iterations ({grpo.num_iterations}) must be >= 1")
        need(
            grpo.max_completion_length >= 1,
            f"training.grpo.max_completion_length ({grpo.max_completion_length}) must be >= 1",
        )
        need(grpo.temperature > 0, f"training.grpo.temperature ({grpo.temperature}) must be > 0")
        need(0 < grpo.top_p <= 1, f"training.grpo.top_p ({grpo.top_p}) must be in (0, 1]")
        need(grpo.top_k >= 0, f"training.grpo.top_k ({grpo.top_k}) must be >= 0")
        need(grpo.repetition_penalty > 0, f"training.grpo.repetition_penalty ({grpo.repetition_penalty}) must be > 0")
        need(grpo.sample_every >= 0, f"training.grpo.sample_every ({grpo.sample_every}) must be >= 0")
    if t.type in ("ppo", "grpo"):
        named = p.training.reward_model.model_name
        need(
            not named or p.training.reward_model.separate or same_model(named, p.model_name),
            f"training.reward_model.model_name ({named}) differs from model_name ({p.model_name}): the reward "
            f"adapter runs on the policy's base, so train the RM on {p.model_name} (or leave this key out)",
        )
    if t.reward_weights is not None:
        need(
            len(t.reward_weights) == len(t.reward_funcs),
            f"training.reward_weights has {len(t.reward_weights)} entries for {len(t.reward_funcs)} "
            "training.reward_funcs: give one weight per function, in order (or leave reward_weights out: 1.0 each)",
        )
    if t.type == "dpo":
        need(t.dpo.beta > 0, f"training.dpo.beta ({t.dpo.beta}) must be > 0")
        # TRL's DPOTrainer raises a bare ValueError for this: it scores with lm_head.weight directly,
        # so an adapter on lm_head would never train
        tm = p.lora.target_modules if p.lora is not None else None
        need(
            not (isinstance(tm, list) and "lm_head" in tm),
            "lora.target_modules includes lm_head, which DPO cannot train (TRL computes log-probabilities "
            "from lm_head.weight directly): leave lm_head out",
        )
=======
    read = [operator.attrgetter(key)(p) for key in (stage.config_section, *stage.reads) if key]
    for section in (p.data, p.training, p.lora, *read):
        check = getattr(section, "problems", None)  # a list (training.reward_funcs) or None (no lora) has none
        if check is not None:
            problems += check(p)
>>>>>>> main
    return problems


def unused_stage_keys(p: Preset, keys: Iterable[str]) -> list[str]:
    """One warning per key in `keys` that lies in another stage's section and differs from its default.

    Args:
        p: the loaded preset.
        keys: the dotted keys the preset file and the overrides set (`training.dpo.beta`).
    """
    defaults = Preset()
    warnings = []
    for key in sorted(keys):
        for section, stages in SECTION_STAGE.items():
            if p.training.type in stages or not (key == section or key.startswith(section + ".")):
                continue
            if operator.attrgetter(key)(p) != operator.attrgetter(key)(defaults):
                reads = "reads" if len(stages) == 1 else "read"
                warnings.append(
                    f"{key} is set but only {readers_text(stages)} {reads} it; this preset trains "
                    f"training.type={p.training.type}, so it has no effect"
                )
    return warnings
