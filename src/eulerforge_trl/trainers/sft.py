"""SFT stage: TRL `SFTTrainer` on {prompt, response} rows, loss on the response only.

`final/` holds the SFT adapter merged into the base (or the fully fine-tuned model): PPO's
reference is "the policy with adapters disabled", which is the SFT model only if SFT is merged.
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from ..config.schema import Preset
from ..data.jsonl import load_splits
from ..models.loading import load_causal_lm, load_tokenizer
from ..rundir import RunDir
from .common import common_trainer_args, logging_callbacks, lora_config, train_and_save_merged, weights_dtype


def to_sft_config(preset: Preset, run: RunDir, has_eval: bool, tokenizer) -> SFTConfig:
    return SFTConfig(
        **common_trainer_args(preset, run, has_eval),
        max_length=preset.data.max_length,
        completion_only_loss=True,
        packing=False,
        eos_token=tokenizer.eos_token,
        dataset_num_proc=None,
    )


def run_sft(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train, evaluate and write `final/`; returns the final metrics."""
    tokenizer = load_tokenizer(preset.model_name)
    train_rows, eval_rows = load_splits(preset.data, preset.training.seed)
    model = load_causal_lm(preset.model_name, dtype=weights_dtype(preset), tokenizer=tokenizer)
    trainer = SFTTrainer(
        model=model,
        args=to_sft_config(preset, run, eval_rows is not None, tokenizer),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=lora_config(preset, "CAUSAL_LM"),
        callbacks=logging_callbacks(preset, run),
    )
    return train_and_save_merged(trainer, preset, run, resume_from, has_eval=eval_rows is not None, stage="sft")
