"""KTO stage: TRL `KTOTrainer` on unpaired labelled rows {prompt, completion, label}.

KTO (Ethayarajh et al. 2024) needs no pairs: each completion is marked desirable (`label` true) or
undesirable, and the loss raises the policy's log-ratio to the reference on the first and lowers it
on the second, each measured against a KL estimate taken from mismatched prompt/completion pairs of
the same batch (so `training.batch_size` must be at least 2 and TRL reads the rows in order: they
are shuffled once, with `training.seed`, before it does).

As DPO: with a `lora:` section the stage trains a fresh LoRA adapter on the SFT model and the
reference is that model with the adapter disabled (no second copy in memory); without one it
fine-tunes every weight against a frozen copy we load ourselves (`load_causal_lm`: TRL would reload
it from `config._name_or_path`, empty for the built-in tiny model). A row whose prompt + completion
is longer than `data.max_length` tokens is dropped (TRL would cut the completion), counted as the
RM and DPO count theirs.

Logged per step (TRL names): `loss`, `rewards/chosen` and `rewards/rejected` (beta x log-ratio of
the desirable and the undesirable completions), `rewards/margins`, `kl` (the batch's KL estimate),
`logps/*`, `logits/*`, and the same with an `eval_` prefix on evaluation. `final/` holds the adapter
merged into the base (or the fully fine-tuned model), so it loads like any causal LM.
"""

from __future__ import annotations

from trl import KTOConfig, KTOTrainer

from ..config.schema import Preset
from ..data.jsonl import load_splits
from ..models.loading import load_causal_lm, load_tokenizer
from ..rundir import RunDir
from .common import load_base, logging_callbacks, lora_config, train_and_save_merged, weights_dtype
from .rows_kept import check_rows_kept, given_rows
from .trl_config import build_trl_config


def to_kto_config(preset: Preset, run: RunDir, has_eval: bool) -> KTOConfig:
    """The `KTOConfig` for a preset (`build_trl_config`): `training.kto`'s TRL fields, and the fields KTO
    sets itself."""
    return build_trl_config(
        "kto",
        preset,
        run,
        has_eval,
        max_length=preset.data.max_length,  # longer rows are dropped (`drop_over_long`), none is cut
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # the reference is the adapters-off model: no copy to sync
    )


def run_kto(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train, evaluate and write `final/`; returns the final metrics."""
    tokenizer = load_tokenizer(preset.model_name)
    train_rows, eval_rows = load_splits(preset.data, preset.training.seed)
    train_rows = train_rows.shuffle(seed=preset.training.seed)  # TRL's KTO samples in order (module docstring)
    model = load_base(preset, tokenizer)  # with `quantization`, the quantized base: the reference too
    peft_config = lora_config(preset, "CAUSAL_LM")
    ref_model = (
        None
        if peft_config is not None
        else load_causal_lm(preset.model_name, dtype=weights_dtype(preset), tokenizer=tokenizer)
    )
    trainer = KTOTrainer(
        model=model,
        ref_model=ref_model,
        args=to_kto_config(preset, run, eval_rows is not None),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(preset, run),
    )
    drop_over_long(trainer, preset.data.max_length)
    check_rows_kept(trainer, given_rows(preset, train_rows, eval_rows), preset.data.max_length)
    return train_and_save_merged(trainer, preset, run, resume_from, has_eval=eval_rows is not None, stage="kto")


def drop_over_long(trainer, max_length: int) -> None:
    """Leave out the rows whose prompt + completion is longer than `max_length` tokens: TRL's KTO keeps
    them and cuts the completion, and a cut answer is judged as if it were the whole one."""

    def fits(row) -> bool:
        return len(row["prompt_ids"]) + len(row["completion_ids"]) <= max_length

    trainer.train_dataset = trainer.train_dataset.filter(fits)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.filter(fits)


__all__ = ["drop_over_long", "run_kto", "to_kto_config"]
