"""JSONL rows -> the columns each trainer expects, with file:line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError

REQUIRED_FIELDS = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt_only": ("prompt",),
}


def read_rows(path: str | Path, task: str, key: str = "data.path") -> list[dict]:
    """Read and check every line of a JSONL file for `task`.

    Raises:
        DataError: `file:line: what is wrong`, naming the preset key for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}")
    fields = REQUIRED_FIELDS[task]
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            for field in fields:
                if field not in row:
                    raise DataError(f"{path}:{number}: missing field '{field}' (task {task} needs {', '.join(fields)})")
                if not isinstance(row[field], str):
                    raise DataError(
                        f"{path}:{number}: field '{field}' must be a string, got {type(row[field]).__name__}"
                    )
            rows.append({f: row[f] for f in fields})
    if not rows:
        raise DataError(f"{key}: {path} holds no rows")
    return rows


def to_trainer_columns(rows: list[dict], task: str) -> list[dict]:
    """Rename our fields to TRL's: SFT's `response` is TRL's `completion` (loss on it only)."""
    if task == "sft":
        return [{"prompt": r["prompt"], "completion": r["response"]} for r in rows]
    return rows


def load_splits(data, seed: int):
    """The training and (optional) evaluation `datasets.Dataset` for a preset's `data` section.

    Evaluation rows come from `data.eval_path` when set, else a `data.eval_split` fraction of
    the training file (shuffled with the run's seed), else there are none.
    """
    from datasets import Dataset

    train = to_trainer_columns(read_rows(data.path, data.task), data.task)
    evaluation = None
    if data.eval_path:
        evaluation = to_trainer_columns(read_rows(data.eval_path, data.task, key="data.eval_path"), data.task)
    elif data.eval_split > 0:
        import random

        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, int(len(train) * data.eval_split))
        if n_eval >= len(train):
            raise DataError(f"data.eval_split ({data.eval_split}) leaves no training rows in {data.path}")
        evaluation = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in order[n_eval:]]
    return Dataset.from_list(train), (Dataset.from_list(evaluation) if evaluation else None)
