"""DPO stage: TRL `DPOTrainer` on {prompt, chosen, rejected} rows, the alternative to RM + PPO.

With a `lora:` section (the usual case) DPO trains a fresh LoRA adapter on the SFT model and the
reference policy is that same model with the adapter disabled: no second copy in memory. Without
one it fine-tunes every weight and keeps a frozen reference copy (twice the weights in memory);
we load that copy ourselves with `load_causal_lm`, because TRL would reload it from
`config._name_or_path`, which is empty for the built-in tiny model and names the bare base for an
adapter-only `model_name`.

`final/` holds the DPO adapter merged into the base (or the fully fine-tuned model) with the
tokenizer, so it loads like any other causal LM and can feed a later stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer

from ..config.schema import Preset
from ..data.jsonl import load_splits
from ..models.loading import load_causal_lm, load_tokenizer
from ..rundir import RunDir
from .common import load_base, logging_callbacks, lora_config, train_and_save_merged, weights_dtype
from .rows_kept import check_rows_kept, given_rows
from .trl_config import build_trl_config


@dataclass
class RPOConfig(DPOConfig):
    """TRL's `DPOConfig` with `rpo_alpha`, the preset's `training.dpo.rpo_alpha`, which TRL 1.16 has no
    field for: RPO is one more loss there, `sft` in `loss_type`, weighted `rpo_alpha` in `loss_weights`
    (the other losses 1 unless `loss_weights` says). Set from it here, and kept as a field so that
    trl_config.json records the setting under the name the preset gave it."""

    rpo_alpha: float | None = field(
        default=None,
        metadata={"help": "weight of the NLL of the chosen response added to the preference loss (RPO); None = off"},
    )

    def __post_init__(self):
        if self.rpo_alpha is not None:
            losses = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
            self.loss_weights = [*(self.loss_weights or [1.0] * len(losses)), float(self.rpo_alpha)]
            self.loss_type = [*losses, "sft"]
        super().__post_init__()


def to_dpo_config(preset: Preset, run: RunDir, has_eval: bool) -> DPOConfig:
    """The `DPOConfig` for a preset (`build_trl_config`): `training.dpo`'s keys and TRL fields, and the
    fields DPO sets itself.

    TRL 1.16's `DPOConfig` has no `eos_token` and deprecates `pad_token`: the trainer appends
    `tokenizer.eos_token` to plain-text chosen/rejected and pads with `tokenizer.pad_token` (EOS for
    most real tokenizers: harmless, its collator masks padding by length): no tokenizer field to map.
    """
    return build_trl_config(
        "dpo",
        preset,
        run,
        has_eval,
        # TRL's collator cuts a longer prompt + completion at the end; `drop_over_long` leaves none
        # to cut (data.max_length drops a row for RM and DPO alike, as the schema documents)
        max_length=preset.data.max_length,
        truncation_mode="keep_start",
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # TR-DPO; the reference is the adapters-off model
        config_class=RPOConfig,
        rpo_alpha=preset.training.dpo.rpo_alpha,
    )


def run_dpo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train, evaluate and write `final/`; returns the final metrics.

    Logged per step (TRL names): `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/margins`
    (mean of beta * (log-ratio chosen - log-ratio rejected)), `rewards/accuracies`, `logps/*`,
    `logits/*`, and the same with an `eval_` prefix on evaluation.

    Example:
        >>> from eulerforge_trl.pipeline.run_stage import run_stage
        >>> result = run_stage("presets/tiny_dpo.yml", ["model_name=outputs/tiny/01_sft/final"], "outputs/tiny/02_dpo")
        >>> result.metrics["eval_rewards/accuracies"] > 0.9
        True
    """
    tokenizer = load_tokenizer(preset.model_name)
    train_rows, eval_rows = load_splits(preset.data, preset.training.seed)
    args = to_dpo_config(preset, run, eval_rows is not None)  # TRL refuses a setting before loading
    model = load_base(preset, tokenizer)  # with `quantization`, the quantized base: the reference too
    peft_config = lora_config(preset, "CAUSAL_LM")
    # LoRA: no ref_model, TRL disables the adapter for the reference pass. Full fine-tuning: a frozen copy.
    ref_model = (
        None
        if peft_config is not None
        else load_causal_lm(preset.model_name, dtype=weights_dtype(preset), tokenizer=tokenizer)
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(preset, run),
    )
    drop_over_long(trainer, preset.data.max_length)
    check_rows_kept(trainer, given_rows(preset, train_rows, eval_rows), preset.data.max_length)
    return train_and_save_merged(trainer, preset, run, resume_from, has_eval=eval_rows is not None, stage="dpo")


def drop_over_long(trainer, max_length: int) -> None:
    """Leave out the pairs whose prompt + chosen or prompt + rejected is longer than `max_length` tokens.

    TRL's DPO keeps them and cuts them at the end (it drops only rows whose prompt alone fills the
    limit): a cut pair compares two answers neither of which is whole, and the RM stage drops such
    pairs. Dropped here, on TRL's own tokenization, they are counted like the RM's (`check_rows_kept`).
    """

    def fits(row) -> bool:
        return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= max_length

    trainer.train_dataset = trainer.train_dataset.filter(fits)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = trainer.eval_dataset.filter(fits)


__all__ = ["RPOConfig", "drop_over_long", "run_dpo", "to_dpo_config"]
