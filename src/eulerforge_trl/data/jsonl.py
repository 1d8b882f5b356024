"""JSONL rows -> the columns each trainer expects, with file:line errors for bad input.

Two shapes of row are accepted for every task, as TRL accepts them:
- raw text: `{"prompt": "...", "response": "..."}` (SFT; TRL's `completion` is read as `response`),
  `{"prompt", "chosen", "rejected"}` (preferences), `{"prompt"}` (prompts);
- conversational: the same fields holding message lists (`[{"role": "user", "content": "..."}]`),
  or SFT's `{"messages": [...]}`, whose last message is the response and the rest the prompt.
A file is one shape or the other throughout. Prompt-only tasks also read SFT files (the prompt is
used, the response ignored), so PPO can reuse the SFT data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import DataError

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt_only": ("prompt",),
}
# Other spellings of our fields, tried in order when the field itself is absent.
_ALIASES = {"response": ("completion",)}


def is_conversational(value) -> bool:
    """True for a message list (`[{"role": ..., "content": ...}, ...]`), False for plain text."""
    return isinstance(value, list)


def read_rows(path: str | Path, task: str, key: str = "data.path") -> list[dict]:
    """Read and check every line of a JSONL file for `task`; rows come back with the task's fields only.

    Raises:
        DataError: `file:line: what is wrong`, naming the preset key for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}")
    rows: list[dict] = []
    shape_of_first = None
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not UTF-8 text (byte {err.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            row = _task_fields(row, task, where)
            shape = is_conversational(row["prompt"])
            if shape_of_first is None:
                shape_of_first = shape
            elif shape != shape_of_first:
                kinds = ("plain text", "message lists")
                raise DataError(
                    f"{where}: this row holds {kinds[shape]} but the rows before it hold {kinds[shape_of_first]}; "
                    "use one format per file"
                )
            rows.append(row)
    if not rows:
        raise DataError(f"{key}: {path} holds no rows")
    _warn_about_degenerate_rows(rows, task, path, key)
    return rows


def extra_columns(path: str | Path, task: str) -> dict[str, list]:
    """The columns of a JSONL file besides the task's own fields, one value per row (None where absent).

    TRL passes them to reward functions as keyword arguments (a `solution` column, say). Rows are
    the non-blank lines, as `read_rows` counts them; call it after `read_rows` has checked the file.
    """
    own = {"messages", *REQUIRED_FIELDS[task], *(a for f in REQUIRED_FIELDS[task] for a in _ALIASES.get(f, ()))}
    # split on "\n" only, as `read_rows` reads lines: str.splitlines would also split inside a JSON
    # string holding a raw U+2028 or \x1c, and the columns would then no longer line up with the rows
    text = Path(path).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    names = dict.fromkeys(k for row in rows for k in row if k not in own)  # first-seen order
    return {name: [row.get(name) for row in rows] for name in names}


def _warn_about_degenerate_rows(rows: list[dict], task: str, path: Path, key: str) -> None:
    """Rows that teach nothing (chosen == rejected, an empty response) are counted and warned about;
    a file of nothing else is an error."""
    if task == "preference":
        what, bad = "chosen equals rejected", sum(r["chosen"] == r["rejected"] for r in rows)
    elif task == "sft":
        what, bad = "the response is empty", sum(not _text_of(r["response"]).strip() for r in rows)
    else:
        return
    if bad == len(rows):
        raise DataError(f"{key}: in every row of {path} {what}: nothing to learn from")
    if bad:
        logger.warning("%s: %d of %d rows are degenerate (%s); they teach nothing", path, bad, len(rows), what)


def _text_of(value) -> str:
    return "".join(m["content"] for m in value) if is_conversational(value) else value


def _task_fields(row: dict, task: str, where: str) -> dict:
    """The task's fields of one row, each a string or (all of them) a message list."""
    fields = REQUIRED_FIELDS[task]
    if "messages" in row and not any(f in row for f in fields if f != "prompt"):
        row = _split_messages(row["messages"], task, where)
    out = {}
    for field in fields:
        name = next((n for n in (field, *_ALIASES.get(field, ())) if n in row), None)
        if name is None:
            needs = ", ".join(fields)
            extra = " (or prompt, completion; or messages)" if task == "sft" else ""
            extra = " (or messages; an SFT file works too)" if task == "prompt_only" else extra
            raise DataError(f"{where}: missing field '{field}' (task {task} needs {needs}{extra})")
        value = row[name]
        if isinstance(value, list):
            _check_messages(value, name, where)
        elif not isinstance(value, str):
            raise DataError(
                f"{where}: field '{name}' must be a string or a list of messages, got {type(value).__name__}"
            )
        out[field] = value
    kinds = {is_conversational(v) for v in out.values()}
    if len(kinds) > 1:
        raise DataError(f"{where}: mixes plain-text and message-list fields; use one or the other in a row")
    return out


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
    return {"prompt": messages[:-1], "response": [last]}


def _check_messages(value, name: str, where: str) -> None:
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

    Evaluation rows come from `data.eval_path` when set, else a `data.eval_split` fraction of
    the training file (shuffled with the run's seed), else there are none.

    Args:
        columns: each row also carries its file's other columns (`extra_columns`) as a dict under
            "columns", so they stay with their row through the split (PPO's reward functions).
    """
    train = read_rows(data.path, data.task)
    if columns:
        train = _with_columns(train, data.path, data.task)
    if data.eval_path:
        held_out = read_rows(data.eval_path, data.task, key="data.eval_path")
        return train, _with_columns(held_out, data.eval_path, data.task) if columns else held_out
    if data.eval_split <= 0:
        return train, None
    import random

    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(len(train) * data.eval_split))
    if n_eval >= len(train):
        raise DataError(f"data.eval_split ({data.eval_split}) leaves no training rows in {data.path}")
    return [train[i] for i in order[n_eval:]], [train[i] for i in order[:n_eval]]


def _with_columns(rows: list[dict], path, task: str) -> list[dict]:
    extra = extra_columns(path, task)
    return [{**row, "columns": {name: values[i] for name, values in extra.items()}} for i, row in enumerate(rows)]


def load_splits(data, seed: int):
    """`split_rows` as `datasets.Dataset`s in TRL's column names (None when there is no evaluation)."""
    from datasets import Dataset

    train, evaluation = split_rows(data, seed)
    train_set = Dataset.from_list(to_trainer_columns(train, data.task))
    eval_set = Dataset.from_list(to_trainer_columns(evaluation, data.task)) if evaluation else None
    return train_set, eval_set
