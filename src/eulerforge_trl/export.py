"""Export a stage's `final/` as a standalone model directory that needs no eulerforge to load.

    eulerforge export outputs/tiny/03_ppo/final --output exported/tiny_ppo

- sft, dpo, ppo, grpo -> an `AutoModelForCausalLM` directory: a LoRA adapter (ppo, grpo) merged into
  the base its adapter_config names; a `final/` that is already a full model (sft, dpo: merged at
  the end of the stage, or fully fine-tuned) re-saved as it is. The tokenizer (chat template
  included) and a generation config whose EOS also holds the chat template's end-of-turn token go
  with it. transformers and vLLM load it as any checkpoint.
- rm -> an `AutoModelForSequenceClassification` directory (num_labels=1): the RM's LoRA merged into
  its base and the RewardHead as the `score` layer (both are a bias-free linear map of the final,
  normed hidden state, so the weights carry over exactly). The stock classifier reads the score at
  the rightmost token that is not the pad token, ours at the last token the attention mask marks
  (the EOS the RM read in training). The two agree when the pad token never ends an input, so
  where the tokenizer pads with EOS (most Llama/Qwen tokenizers) the export gets a pad token of its
  own, one new embedding row that no input uses. Inputs rendered as the RM was trained (the whole
  conversation through the chat template, or plain prompt + response + EOS) and right-padded (the
  saved tokenizer's side) then score as `eulerforge_trl.score` does. Left padding shifts position
  ids in any transformers classifier; ours counts positions from the mask, so there they differ.

The directory is written atomically (a temporary directory renamed into place).

Example:
    >>> from eulerforge_trl.export import export_model
    >>> export_model("outputs/tiny/03_ppo/final", "exported/tiny_ppo")
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained("exported/tiny_ppo")
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .rundir import FINAL_MARKER, atomic_directory
from .stages import STAGES

logger = logging.getLogger(__name__)

CAUSAL_LM = "AutoModelForCausalLM"
SEQUENCE_CLASSIFIER = "AutoModelForSequenceClassification"
# the pad token an exported classifier gets when its tokenizer pads with a token that ends inputs
EXPORT_PAD_TOKEN = "<|eulerforge_pad|>"


@dataclass(frozen=True)
class ExportResult:
    """What `export_model` wrote."""

    stage: str  # the stage whose final/ it was (the final marker's)
    output_dir: Path
    model_class: str  # the transformers Auto class that loads it


def export_model(final_dir: str | Path, output_dir: str | Path) -> ExportResult:
    """Write `final_dir` (a stage's `final/`) as a standalone transformers model directory.

    Args:
        final_dir: `RUN/final` of a finished sft, dpo, ppo, grpo or rm stage.
        output_dir: a new (or empty) directory; written atomically.

    Returns:
        The stage, the directory and the Auto class that loads it.

    Raises:
        ModelError: one line naming `RUN/final` or `--output`: not a stage's final/, an output that
            exists and holds files, or an RM head a stock classifier cannot reproduce.

    Example:
        >>> export_model("outputs/tiny/02_rm/final", "exported/tiny_rm").model_class
        'AutoModelForSequenceClassification'
    """
    final_dir, output_dir = Path(final_dir), Path(output_dir)
    stage = _stage_of(final_dir)
    _check_output(output_dir, final_dir)
    if stage == "rm":
        model, tokenizer = _reward_classifier(final_dir)
        model_class = SEQUENCE_CLASSIFIER
    else:
        model, tokenizer = _causal_lm(final_dir)
        model_class = CAUSAL_LM
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    logger.info("exported %s final/ %s to %s (%s)", stage, final_dir, output_dir, model_class)
    return ExportResult(stage=stage, output_dir=output_dir, model_class=model_class)


def _stage_of(final_dir: Path) -> str:
    """The stage that wrote `final_dir`, from its completion marker."""
    if not final_dir.is_dir():
        raise ModelError(
            f"RUN/final {final_dir}: no such directory (give a stage's final/, e.g. outputs/tiny/01_sft/final)"
        )
    marker = final_dir / FINAL_MARKER
    if not marker.is_file():
        raise ModelError(
            f"RUN/final {final_dir}: not a stage's final/ directory (no {FINAL_MARKER}: the stage did not finish, "
            "or this is another directory); give RUN/final of a finished sft, dpo, ppo, grpo or rm run"
        )
    try:
        stage = json.loads(marker.read_text(encoding="utf-8")).get("stage")
    except ValueError:
        stage = None
    if stage not in STAGES:
        raise ModelError(f"RUN/final {final_dir}: {FINAL_MARKER} names no known stage ({stage!r})")
    return stage


def _check_output(output_dir: Path, final_dir: Path) -> None:
    resolved, source = output_dir.resolve(), final_dir.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise ModelError(f"--output {output_dir}: must lie outside RUN/final {final_dir}")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ModelError(f"--output {output_dir}: exists and is not an empty directory; give a new directory")


def _causal_lm(final_dir: Path):
    """The causal LM of an sft/dpo/ppo/grpo final/ with its adapter (if any) merged, and its tokenizer."""
    from .data.render import stop_token_ids
    from .models.loading import is_adapter_dir, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(final_dir))
    if not is_adapter_dir(str(final_dir)) and not (final_dir / "config.json").is_file():
        raise ModelError(f"RUN/final {final_dir}: holds neither a model (config.json) nor a LoRA adapter")
    model = load_causal_lm(str(final_dir), tokenizer=tokenizer)  # an adapter-only final/ is merged into its base
    model.config._name_or_path = ""  # no path of this machine in the exported config
    model.config.use_cache = True  # training switched the KV cache off; generation wants it
    if getattr(tokenizer, "chat_template", None):
        stops = stop_token_ids(tokenizer, conversational=True)  # EOS and the template's end-of-turn token
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    return model, tokenizer


def _reward_classifier(final_dir: Path):
    """An rm final/ as a num_labels=1 sequence classifier on its merged base, and its tokenizer."""
    from .data.render import stop_token_ids
    from .generation.merged import merged_model
    from .models.reward_head import sequence_classifier_on
    from .models.scorer import REWARD_ADAPTER, load_reward_model

    where = f"RUN/final {final_dir}"
    scorer, tokenizer = load_reward_model(str(final_dir))
    bias = scorer.head.linear.bias
    if bias is not None and bool(bias.detach().abs().max() > 0):
        raise ModelError(
            f"{where}: its RewardHead has a bias ({bias.item():.4g}), which transformers' "
            "sequence classifiers (a bias-free score layer) cannot hold"
        )
    scorer.head.linear.bias = None
    classifier = sequence_classifier_on(merged_model(scorer.model, REWARD_ADAPTER), "", scorer.head, where)
    conversational = bool(getattr(tokenizer, "chat_template", None))
    if tokenizer.pad_token_id in {tokenizer.eos_token_id, *stop_token_ids(tokenizer, conversational)}:
        # the stock classifier would skip a final EOS as padding: give it a pad token no input holds
        tokenizer.add_special_tokens({"pad_token": EXPORT_PAD_TOKEN})
        classifier.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    classifier.config.eos_token_id = tokenizer.eos_token_id
    tokenizer.padding_side = "right"
    return classifier.eval(), tokenizer
