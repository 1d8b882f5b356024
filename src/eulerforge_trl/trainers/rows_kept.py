"""Rows TRL's preprocessing leaves out: the SFT, RM and DPO trainers drop rows that do not fit
`data.max_length` (no trained token left after the cut, or a pair longer than the limit). Said once,
with the count, and in one line when nothing is left (TRL would fail later with `num_samples=0`)."""

from __future__ import annotations

import logging

from ..errors import DataError

logger = logging.getLogger(__name__)


def check_rows_kept(trainer, given: dict[str, int], max_length: int) -> None:
    """`given`: {preset key of the data (data.path, data.eval_path, ...): rows handed to the trainer},
    the training data first, then the evaluation data."""
    datasets = (trainer.train_dataset, trainer.eval_dataset)
    for (key, n_given), dataset in zip(given.items(), datasets):
        try:
            kept = len(dataset)
        except TypeError:  # an iterable dataset: its length is unknown
            continue
        if kept == 0:
            raise DataError(
                f"{key}: all {n_given} rows are longer than data.max_length ({max_length}) tokens, and the trainer "
                "drops such rows: raise data.max_length or shorten the rows"
            )
        if kept < n_given:
            logger.warning(
                "%s: %d of %d rows are longer than data.max_length (%d) tokens and are left out",
                key,
                n_given - kept,
                n_given,
                max_length,
            )


def given_rows(preset, train_rows, eval_rows) -> dict[str, int]:
    """`check_rows_kept`'s `given` for a stage's training and evaluation rows."""
    eval_key = "data.eval_path" if preset.data.eval_path else "data.eval_split"
    return {"data.path": len(train_rows), **({eval_key: len(eval_rows)} if eval_rows is not None else {})}
