"""Rules that span several preset keys; every broken rule is reported at once, with the fix."""

from __future__ import annotations

from .schema import Preset

_TASK_OF_STAGE = {"sft": "sft", "rm": "preference", "dpo": "preference", "ppo": "prompt_only"}


def preset_problems(p: Preset) -> list[str]:
    t, ppo = p.training, p.training.ppo
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(bool(p.model_name), "model_name must not be empty")
    need(bool(p.data.path), "data.path must name a JSONL file")
    expected = _TASK_OF_STAGE[t.type]
    need(
        p.data.task == expected,
        f"data.task ({p.data.task}) does not fit training.type={t.type}: set data.task={expected}",
    )
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
    if t.type in ("rm", "ppo"):
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
    if t.type == "dpo":
        need(t.dpo.beta > 0, f"training.dpo.beta ({t.dpo.beta}) must be > 0")
    return problems
