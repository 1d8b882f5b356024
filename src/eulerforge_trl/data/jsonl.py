"""Rows of any source -> the columns each trainer expects, with file:line errors for bad JSONL input.

Where rows come from (JSONL, JSON, parquet, CSV, a `save_to_disk` directory, a hub name) is
`sources.py`; `data.columns` then renames the source's columns to ours, and `formats.py` turns
ShareGPT, Alpaca and implicit-prompt preference rows into the shapes below.

Two shapes of row are accepted for every task, as TRL accepts them:
- raw text: `{"prompt": "...", "response": "..."}` (SFT; TRL's `completion` is read as `response`),
  `{"prompt", "chosen", "rejected"}` (preferences), `{"prompt"}` (prompts), `{"prompt", "completion",
  "label"}` (unpaired preferences: `label` true for a desirable completion, false for an undesirable one);
- conversational: the same fields holding message lists (`[{"role": "user", "content": "..."}]`),
  or SFT's `{"messages": [...]}`, whose last message is the response and the rest the prompt.
A file is one shape or the other throughout. Prompt-only tasks also read SFT files (the prompt is
used, the response ignored), so PPO can reuse the SFT data.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError
from .formats import form_of, recognise
from .sources import Records, load_records

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt_only": ("prompt",),
    "unpaired_preference": ("prompt", "completion", "label"),
}
# Other spellings of our fields, tried in order when the field itself is absent.
_ALIASES = {"response": ("completion",), "completion": ("response",)}
# fields that hold a yes/no, not text: an unpaired preference's `label`
_FLAG_FIELDS = ("label",)


class Rows(list):
    """A source's rows, and how the source wrote them (`form`, e.g. "Alpaca rows (instruction, output,
    read as message lists)"): messages about the rows name the format the user gave."""

    form: str = "message lists"


def read_rows(
    path: str | Path,
    task: str,
    key: str = "data.path",
    *,
    split: str = "train",
    subset: str | None = None,
    columns: dict[str, str] | None = None,
    split_key: str = "data.split",
) -> list[dict]:
    """Read and check every row of a source for `task`; rows come back with the task's fields only.

    Args:
        path: a JSONL/JSON/parquet/CSV file, a `save_to_disk` directory or a hub dataset name
            (see `eulerforge_trl.data.sources`).
        split, subset: the `datasets` split spec and configuration (hub datasets, `DatasetDict`s).
        columns: `data.columns`, the source's column names -> ours (`{"question": "prompt"}`).

    Raises:
        DataError: `file:line: what is wrong` (JSONL) or `source row i: ...`, naming the preset key
            for a missing source and `data.columns` for a missing column.
    """
    return _read(path, split, subset, columns, split_key, task, key)[0]


def read_data(data, key: str = "data.path", columns: bool = False) -> list[dict]:
    """`read_rows` for a preset's `data` section: `data.path` (key "data.path") or `data.eval_path`,
    with its split, subset and column mapping.

    Args:
        columns: each row also carries the source's other columns as a dict under "columns"
            (what `split_rows(columns=True)` gives), for reward functions.
    """
    return _rows_of(data, key, columns)


def extra_columns(
    path: str | Path,
    task: str,
    *,
    split: str = "train",
    subset: str | None = None,
    columns: dict[str, str] | None = None,
) -> dict[str, list]:
    """The columns of a source besides the task's own fields, one value per row (None where absent).

    TRL passes them to reward functions as keyword arguments (a `solution` column, say). Names are
    after `columns` renamed them; rows are those `read_rows` returns for the same arguments.
    """
    return _read(path, split, subset, columns, "data.split", task, "data.path")[1]


def _source_of(data, key: str) -> tuple:
    """(source, split, subset, columns, split_key) of `data.path` or `data.eval_path`."""
    columns = dict(data.columns or {})
    if key == "data.eval_path":
        split = data.eval_path_split or data.split
        split_key = "data.eval_path_split" if data.eval_path_split else "data.split"
        return data.eval_path, split, data.subset, columns, split_key
    return data.path, data.split, data.subset, columns, "data.split"


def _read(path, source_split, subset, columns, split_key, task, key) -> tuple[list[dict], dict[str, list]]:
    split = source_split
    records = load_records(path, split=split, subset=subset, key=key, split_key=split_key)
    columns = dict(columns or {})
    _check_mapped_columns(records, columns)
    rows = Rows()
    extras: list[dict] = []
    shape_of_first = None
    for raw, where in zip(records.rows, records.where):
        renamed = {columns.get(name, name): value for name, value in raw.items()}
        try:
            row, extra = _task_fields(recognise(renamed, task, where), task, where)
        except _MissingField as err:
            if records.line_numbers:  # JSONL: the line that lacks it
                raise
            raise DataError(_missing_column_message(records, err.field, task, columns, key)) from None
        shape = isinstance(row["prompt"], list)  # a message list, or plain text
        if shape_of_first is None:
            shape_of_first, rows.form = shape, form_of(renamed, task)
        elif shape != shape_of_first:
            raise DataError(
                f"{where}: this row holds {form_of(renamed, task)} but the rows before it hold {rows.form}; "
                "use one format per file"
            )
        rows.append(row)
        extras.append(extra)
    if not rows:
        raise DataError(f"{key}: {records.name} holds no rows")
    _warn_about_degenerate_rows(rows, task, records.name, key)
    names = dict.fromkeys(name for extra in extras for name in extra)  # first-seen order
    return rows, {name: [extra.get(name) for extra in extras] for name in names}


def _check_mapped_columns(records: Records, columns: dict[str, str]) -> None:
    missing = [name for name in columns if name not in records.columns]
    if missing:
        have = ", ".join(records.columns) or "none"
        raise DataError(
            f"data.columns maps '{missing[0]}' but {records.name} has no column of that name (its columns: {have})"
        )


def _missing_column_message(records: Records, field: str, task: str, columns: dict, key: str) -> str:
    have = ", ".join(records.columns) or "none"
    needs = ", ".join(REQUIRED_FIELDS[task])
    return (
        f"{key}: {records.name} has no column '{field}' (task {task} needs {needs}, or messages, ShareGPT "
        f"conversations or Alpaca instruction/output; its columns: {have}): map yours with data.columns, "
        f"e.g. --set data.columns.<your_column>={field}"
    )


class _MissingField(DataError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def _warn_about_degenerate_rows(rows: list[dict], task: str, path: Path, key: str) -> None:
    """Rows that teach nothing (chosen == rejected, an empty response) are counted and warned about;
    a file of nothing else is an error."""
    if task == "preference":
        what, bad = "chosen equals rejected", sum(r["chosen"] == r["rejected"] for r in rows)
    elif task in ("sft", "unpaired_preference"):
        field = "response" if task == "sft" else "completion"
        what, bad = f"the {field} is empty", sum(not _text_of(r[field]).strip() for r in rows)
    else:
        return
    if bad == len(rows):
        raise DataError(f"{key}: in every row of {path} {what}: nothing to learn from")
    if task == "unpaired_preference" and len({r["label"] for r in rows}) == 1:
        logger.warning(
            "%s %s: every label is %s, so KTO learns from %s completions only",
            key,
            path,
            str(rows[0]["label"]).lower(),
            "desirable" if rows[0]["label"] else "undesirable",
        )
    if bad:
        logger.warning("%s: %d of %d rows are degenerate (%s); they teach nothing", path, bad, len(rows), what)


def _text_of(value) -> str:
    return "".join(m["content"] for m in value) if isinstance(value, list) else value


def _task_fields(row: dict, task: str, where: str) -> tuple[dict, dict]:
    """(the task's fields of one row, each a string or (all of them) a message list; its other columns)."""
    fields = REQUIRED_FIELDS[task]
    own = {"messages", *fields, *(a for f in fields for a in _ALIASES.get(f, ()))}
    extra = {name: value for name, value in row.items() if name not in own}
    if "messages" in row and not any(f in row for f in fields if f not in ("prompt", *_FLAG_FIELDS)):
        flags = {f: row[f] for f in _FLAG_FIELDS if f in row}
        row = {**_split_messages(row["messages"], task, where), **flags}
    out = {}
    for field in fields:
        name = next((n for n in (field, *_ALIASES.get(field, ())) if n in row), None)
        if name is None:
            needs = ", ".join(fields)
            also = " (or prompt, completion; or messages)" if task == "sft" else ""
            also = " (or messages; an SFT file works too)" if task == "prompt_only" else also
            also = " (response reads as completion; or messages and label)" if task == "unpaired_preference" else also
            raise _MissingField(
                f"{where}: missing field '{field}' (task {task} needs {needs}{also}; "
                "ShareGPT and Alpaca rows work too, other names map with data.columns)",
                field,
            )
        value = row[name]
        if field in _FLAG_FIELDS:
            if not isinstance(value, bool):
                raise DataError(
                    f"{where}: field '{name}' must be true (a desirable completion) or false (an undesirable one), "
                    f"got {value!r}"
                )
        elif isinstance(value, list):
            _check_messages(value, name, where)
        elif not isinstance(value, str):
            raise DataError(
                f"{where}: field '{name}' must be a string or a list of messages, got {type(value).__name__}"
            )
        out[field] = value
    kinds = {isinstance(v, list) for f, v in out.items() if f not in _FLAG_FIELDS}
    if len(kinds) > 1:
        raise DataError(f"{where}: mixes plain-text and message-list fields; use one or the other in a row")
    return out, extra


def _split_messages(messages, task: str, where: str) -> dict:
    """`{"messages": [...]}` -> prompt = all but the last message, response = the last (an assistant turn)."""
    _check_messages(messages, "messages", where)
    last = messages[-1]
    if last.get("role") != "assistant":
        if task == "prompt_only":
            return {"prompt": messages}
        raise DataError(f"{where}: the last of 'messages' must be the assistant's answer, got role '{last['role']}'")
    if len(messages) < 2:
        raise DataError(f"{where}: 'messages' needs a prompt before the assistant's answer")
    return {"prompt": messages[:-1], "response": [last]}  # `completion` reads `response` too (_ALIASES)


def _check_messages(value, name: str, where: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: field '{name}' must be a list of messages, got {type(value).__name__}")
    if not value:
        raise DataError(f"{where}: field '{name}' is an empty message list")
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise DataError(
                f'{where}: field \'{name}\'[{i}] must be a message like {{"role": "user", "content": "..."}}'
            )
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{name}'[{i}] needs a string 'content'")


def to_trainer_columns(rows: list[dict], task: str) -> list[dict]:
    """Rename our fields to TRL's: SFT's `response` is TRL's `completion` (loss on it only)."""
    if task == "sft":
        return [{"prompt": r["prompt"], "completion": r["response"]} for r in rows]
    return rows


def split_rows(data, seed: int, columns: bool = False) -> tuple[list[dict], list[dict] | None]:
    """The training and (optional) evaluation rows for a preset's `data` section.

    Evaluation rows come from `data.eval_path` when set (its split `data.eval_path_split`), else a
    `data.eval_split` fraction of the training rows (`datasets`' seeded `train_test_split`), else there are none.

    Args:
        columns: each row also carries its source's other columns (`extra_columns`) as a dict under
            "columns", so they stay with their row through the split (PPO's reward functions).
    """
    train = _rows_of(data, "data.path", columns)
    if data.eval_path:
        return train, _rows_of(data, "data.eval_path", columns)
    if data.eval_split <= 0:
        return train, None
    from datasets import Dataset

    n_eval = max(1, int(len(train) * data.eval_split))
    if n_eval >= len(train):
        raise DataError(f"data.eval_split ({data.eval_split}) leaves no training rows in {data.path}")
    # the split of row indices: the rows themselves (message lists, mixed-type columns) stay Python objects
    split = Dataset.from_dict({"row": range(len(train))}).train_test_split(test_size=n_eval, seed=seed)
    return [train[i] for i in split["train"]["row"]], [train[i] for i in split["test"]["row"]]


def _rows_of(data, key: str, columns: bool) -> list[dict]:
    rows, extra = _read(*_source_of(data, key), data.task, key)
    if not columns:
        return rows
    return [{**row, "columns": {name: values[i] for name, values in extra.items()}} for i, row in enumerate(rows)]


def load_splits(data, seed: int):
    """`split_rows` as `datasets.Dataset`s in TRL's column names (None when there is no evaluation)."""
    from datasets import Dataset

    train, evaluation = split_rows(data, seed)
    train_set = Dataset.from_list(to_trainer_columns(train, data.task))
    eval_set = Dataset.from_list(to_trainer_columns(evaluation, data.task)) if evaluation else None
    return train_set, eval_set
