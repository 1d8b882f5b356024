"""RM stage: TRL `RewardTrainer` with a LoRA adapter + scalar head on the SFT model.

The sequence-classification model (`reward_head.sequence_classifier_on`) is built around the causal
LM's own decoder stack, so the adapter's module names are the causal LM's and the adapter loads
beside the policy's in PPO. `final/` holds the adapter, `reward_head.pt` and `reward_meta.json`
(which base it belongs to), written by `reward_files.save_reward_model`.
"""

from __future__ import annotations

import torch
from trl import RewardConfig, RewardTrainer

from ..config.schema import Preset
from ..data.jsonl import split_rows
from ..data.render import reward_ids
from ..distributed import fit_wrap_policy
from ..models.fingerprint import base_identity
from ..models.loading import load_tokenizer, pin_adapter_base, resolved_model_name
from ..models.reward_files import save_reward_model
from ..models.reward_head import sequence_classifier_on
from ..models.scorer import load_reward_model, score
from ..rundir import RunDir, append_metrics, atomic_directory, write_final_marker
from .common import (
    adapters_in_fp32,
    load_base,
    logging_callbacks,
    lora_config,
    same_model_unsharded,
    trained_model_to_save,
)
from .rows_kept import check_rows_kept, given_rows
from .trl_config import build_trl_config


def to_reward_config(preset: Preset, run: RunDir, has_eval: bool, tokenizer) -> RewardConfig:
    """The `RewardConfig`: TRL's defaults (dropout off, no reward centring) and `training.rm`."""
    return build_trl_config(
        "rm", preset, run, has_eval, max_length=preset.data.max_length, eos_token=tokenizer.eos_token
    )


def tokenized_pairs(rows: list[dict], tokenizer):
    """Preference rows -> TRL's pre-tokenized `chosen_ids`/`rejected_ids`, rendered by `reward_ids`."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "chosen_ids": reward_ids(tokenizer, r["prompt"], r["chosen"]),
                "rejected_ids": reward_ids(tokenizer, r["prompt"], r["rejected"]),
            }
            for r in rows
        ]
    )


def run_rm(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    tokenizer = load_tokenizer(preset.model_name)
    train_rows, eval_rows = split_rows(preset.data, preset.training.seed)
    args = to_reward_config(preset, run, eval_rows is not None, tokenizer)  # TRL refuses a setting before loading
    causal_lm = load_base(preset, tokenizer)  # with `quantization`, the quantized base (QLoRA)
    base_name = resolved_model_name(preset.model_name)
    identity = base_identity(causal_lm, base_name)
    trainer = RewardTrainer(
        model=sequence_classifier_on(causal_lm, base_name),
        args=args,
        train_dataset=tokenized_pairs(train_rows, tokenizer),
        eval_dataset=tokenized_pairs(eval_rows, tokenizer) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=lora_config(preset, "SEQ_CLS"),  # SEQ_CLS makes peft train and save `score`
        callbacks=logging_callbacks(preset, run),
    )
    check_rows_kept(trainer, given_rows(preset, train_rows, eval_rows), preset.data.max_length)
    if preset.quantization is not None:
        adapters_in_fp32(trainer.model)  # the adapter and the head train in fp32 over the quantized base
    fit_wrap_policy(trainer.accelerator, trainer.model)
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = dict(result.metrics)
    peft_model = trained_model_to_save(  # sharded: the classifier built again on a fresh base, the same LoRA
        trainer,
        lambda: same_model_unsharded(
            trainer, sequence_classifier_on(load_base(preset, trainer.processing_class), base_name)
        ),
    )
    if trainer.is_world_process_zero():
        with atomic_directory(run.final) as tmp:
            save_reward_model(tmp, peft_model, identity)
            tokenizer.save_pretrained(tmp)
            write_final_marker(
                tmp, stage="rm", base=base_name, steps=trainer.state.global_step, **pin_adapter_base(tmp, run.final)
            )
        if eval_rows is not None:
            metrics.update(evaluate_checkpoint(run, eval_rows, trainer.state.global_step))
    trainer.accelerator.wait_for_everyone()
    return metrics


def evaluate_checkpoint(run: RunDir, eval_rows, step: int) -> dict:
    """Held-out accuracy of the saved `final/`, scored the way PPO will score (the last metrics line)."""
    scorer, tokenizer = load_reward_model(str(run.final))
    prompts = [r["prompt"] for r in eval_rows]
    chosen = torch.tensor(score(scorer, tokenizer, prompts, [r["chosen"] for r in eval_rows]))
    rejected = torch.tensor(score(scorer, tokenizer, prompts, [r["rejected"] for r in eval_rows]))
    metrics = {
        "eval_accuracy": (chosen > rejected).float().mean().item(),
        "eval_margin": (chosen - rejected).mean().item(),
        "eval_rows": len(prompts),
    }
    append_metrics(run.metrics, {"step": step, "final_eval": True, **metrics})
    return metrics


__all__ = ["run_rm", "to_reward_config"]
