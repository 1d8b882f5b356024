"""SFT stage: TRL `SFTTrainer` on {prompt, response} rows, loss on the response only.

Conversations (`data.assistant_turns: all`, the default) are tokenised here, every assistant turn
masked in (`render.conversation_ids`), and reach TRL as `input_ids` + `assistant_masks`: TRL's own
`assistant_only_loss` needs `{% generation %}` markers, which most templates (SmolLM2's among them)
lack and TRL patches in for a fixed list of model families only. A template that renders the last
turn unlike earlier ones (Qwen3.5's) is swapped for TRL's training version of it. Plain-text rows
and `assistant_turns: last` go to TRL as prompt/completion.

`final/` holds the SFT adapter merged into the base (or the fully fine-tuned model): PPO's
reference is "the policy with adapters disabled", which is the SFT model only if SFT is merged.
"""

from __future__ import annotations

import logging

from trl import SFTConfig, SFTTrainer
from trl.data_utils import is_conversational

from ..config.schema import Preset
from ..data import render
from ..data.jsonl import split_rows, to_trainer_columns
from ..errors import DataError, PresetError
from ..models.loading import load_tokenizer
from ..rundir import RunDir
from .common import load_base, logging_callbacks, lora_config, train_and_save_merged
from .rows_kept import check_rows_kept, given_rows
from .trl_config import build_trl_config

logger = logging.getLogger(__name__)


def to_sft_config(preset: Preset, run: RunDir, has_eval: bool, tokenizer, model=None) -> SFTConfig:
    """The `SFTConfig`: TRL's defaults (prompt/completion rows train the completion only), `training.sft`,
    and a packing strategy `model` trains with (`packing_strategy`; without `model`, the preset's)."""
    strategy = packing_strategy(preset, model) if model is not None else preset.training.sft.packing_strategy
    return build_trl_config(
        "sft",
        preset,
        run,
        has_eval,
        max_length=preset.data.max_length,
        eos_token=tokenizer.eos_token,
        **({"packing_strategy": strategy} if strategy else {}),  # None: TRL's default, bfd
    )


def packing_strategy(preset: Preset, model) -> str | None:
    """`training.sft.packing_strategy` for `model`: null = TRL's bfd where the model keeps packed rows
    apart, else wrapped, logged. bfd, bfd_split and `padding_free` hand the model several rows in one
    sequence told apart by position ids; linear-attention layers (Qwen3.5's Gated DeltaNet) do that
    only with the causal-conv1d and flash-linear-attention kernels on a GPU (transformers raises
    otherwise), so an explicit padding-free setting there is refused in one line."""
    sft = preset.training.sft
    padding_free = sft.passthrough.get("padding_free", False)
    if not (sft.passthrough.get("packing", False) or padding_free) or keeps_packed_rows_apart(model):
        return sft.packing_strategy
    why = (
        f"model_name {preset.model_name} has linear-attention layers, which keep rows packed into one sequence "
        "apart only with the causal-conv1d and flash-linear-attention kernels on a GPU"
    )
    if padding_free:
        raise PresetError(f"training.sft.padding_free=true: {why}; leave it false")
    if sft.packing_strategy not in (None, "wrapped"):
        raise PresetError(
            f"training.sft.packing_strategy={sft.packing_strategy}: {why}; set training.sft.packing_strategy=wrapped"
        )
    if sft.packing_strategy is None:
        logger.warning("training.sft.packing: rows packed wrapped (attending across rows), not bfd: %s", why)
    return "wrapped"


def keeps_packed_rows_apart(model) -> bool:
    """Whether `model` can train on rows packed padding-free (told apart by position ids)."""
    from transformers.utils.import_utils import is_causal_conv1d_available, is_flash_linear_attention_available

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if "linear_attention" not in (getattr(config, "layer_types", None) or []):
        return True
    return is_causal_conv1d_available() and is_flash_linear_attention_available()


def sft_datasets(preset: Preset, tokenizer):
    """(train, eval or None) `datasets.Dataset`s as `SFTTrainer` takes them (see the module doc)."""
    from datasets import Dataset

    train, evaluation = split_rows(preset.data, preset.training.seed)

    def build(rows: list[dict]) -> Dataset:
        if preset.data.assistant_turns == "all" and is_conversational(rows[0]):
            pairs = _conversation_ids(tokenizer, [r["prompt"] + r["response"] for r in rows], preset.model_name)
            return Dataset.from_dict({"input_ids": [i for i, _ in pairs], "assistant_masks": [m for _, m in pairs]})
        return Dataset.from_list(to_trainer_columns(rows, "sft"))

    return build(train), build(evaluation) if evaluation else None


def _conversation_ids(tokenizer, conversations: list[list[dict]], model_name: str) -> list[tuple[list, list]]:
    """`render.conversation_ids` of each conversation. A template that renders earlier turns unlike the
    last (Qwen3, Qwen3.5, Phi-3, ...) is swapped for TRL's prefix-preserving training version of it, as
    TRL's `assistant_only_loss` does; the tokenizer saved in final/ keeps its own."""
    try:
        return [render.conversation_ids(tokenizer, messages) for messages in conversations]
    except DataError as err:
        from trl.chat_template_utils import get_training_chat_template

        try:
            template = get_training_chat_template(tokenizer)
        except ValueError:  # not a template TRL knows how to patch
            template = None
        if template is None:
            raise DataError(f"{model_name}: {err}") from None
    logger.info("%s: multi-turn rows rendered with TRL's training version of the chat template", model_name)
    return [render.conversation_ids(tokenizer, messages, chat_template=template) for messages in conversations]


def run_sft(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train, evaluate and write `final/`; returns the final metrics."""
    tokenizer = load_tokenizer(preset.model_name)
    train_rows, eval_rows = sft_datasets(preset, tokenizer)
    model = load_base(preset, tokenizer)
    args = to_sft_config(preset, run, eval_rows is not None, tokenizer, model)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        processing_class=tokenizer,
        peft_config=lora_config(preset, "CAUSAL_LM"),
        callbacks=logging_callbacks(preset, run),
    )
    check_rows_kept(trainer, given_rows(preset, train_rows, eval_rows), preset.data.max_length)
    return train_and_save_merged(trainer, preset, run, resume_from, has_eval=eval_rows is not None, stage="sft")
