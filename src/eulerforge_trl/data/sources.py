"""Where rows come from: a JSONL file read line by line, or anything `datasets` reads.

`load_records(source, ...)` returns the raw rows (dicts) of one source, each with where it came
from for error messages: `file:line` for JSONL, `source row i` (as `dataset[i]` indexes) otherwise.

Sources, tried in this order:
- an existing `.jsonl` file: read here, so a bad line is reported as `file:line`;
- an existing `.json`, `.parquet` or `.csv` file: `datasets.load_dataset(<format>, data_files=...)`;
- an existing directory: `datasets.load_from_disk` when `save_to_disk` wrote it (a `Dataset` or a
  `DatasetDict`), else `datasets.load_dataset(directory)` (a folder of data files, a hub clone);
- anything else that looks like a hub name (`trl-lib/ultrafeedback_binarized`):
  `datasets.load_dataset(name, subset, split=split)`. Offline (`HF_HUB_OFFLINE=1`) it reads what
  the Hugging Face cache holds; with neither network nor cache it fails in one line saying what
  to do instead.

`split` is a `datasets` split spec (`train`, `test`, `train[:1000]`, `train[:10%]`); a single file
has one split, `train`. `subset` is the hub dataset's configuration name (`load_dataset`'s `name`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

# file suffix -> the `datasets` builder that reads it (JSONL is read here, line by line)
BUILDERS = {".json": "json", ".parquet": "parquet", ".csv": "csv"}
JSONL_SUFFIX = ".jsonl"
# owner/name or name, as the hub spells dataset ids
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Records:
    """The raw rows of one source.

    Attributes:
        rows: one dict per row, as the source holds it (before `data.columns` renames anything).
        where: one location per row for messages: `file:line` (JSONL) or `source row i`.
        name: the source as messages name it (the path, or the hub name with its split).
        columns: the source's column names (JSONL: every key of any row, first seen first).
        line_numbers: `where` names lines of a JSONL file (columns may differ from row to row).
    """

    rows: list[dict]
    where: list[str]
    name: str
    columns: list[str]
    line_numbers: bool = False


def load_records(
    source: str | Path,
    split: str = "train",
    subset: str | None = None,
    key: str = "data.path",
    split_key: str = "data.split",
) -> Records:
    """Every row of `source` (a file, a `save_to_disk` directory or a hub name), checked to be a dict.

    Args:
        key, split_key: the preset keys that named the source and the split, for messages.

    Raises:
        DataError: one line naming the key and the source (and `file:line` for a bad JSONL line).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() == JSONL_SUFFIX:
            records = _jsonl_records(path)
            return _take_split(records, split, key, split_key) if split != "train" else records
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            known = ", ".join([JSONL_SUFFIX, *BUILDERS])
            raise DataError(
                f"{key}: {path}: unknown file type '{path.suffix}'; use {known}, a save_to_disk directory or a "
                "hub dataset name"
            )
        return _from_datasets(str(path), key, split_key, split, builder=builder, data_files=str(path))
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _from_disk(path, split, key, split_key)
        return _from_datasets(str(path), key, split_key, split, builder=str(path), subset=subset)
    if not text or not _HUB_NAME.match(text) or path.suffix.lower() in {JSONL_SUFFIX, *BUILDERS}:
        raise DataError(f"{key}: file not found: {text}")
    return _from_datasets(text, key, split_key, split, builder=text, subset=subset, hub=True)


def _jsonl_records(path: Path) -> Records:
    rows: list[dict] = []
    where: list[str] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            here = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM, as Windows editors write
            except UnicodeDecodeError as err:
                raise DataError(f"{here}: not UTF-8 text (byte {err.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{here}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{here}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            where.append(here)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return Records(rows=rows, where=where, name=str(path), columns=columns, line_numbers=True)


def _take_split(records: Records, split: str, key: str, split_key: str) -> Records:
    """A split spec (`train[:100]`, `train[10%:]`) applied to a single file's rows (its one split is `train`)."""
    spans = _spans(split, {"train": len(records.rows)}, records.name, split_key)
    picked = [i for _, start, stop in spans for i in range(start, stop)]
    return Records(
        rows=[records.rows[i] for i in picked],
        where=[records.where[i] for i in picked],
        name=records.name,
        columns=records.columns,
        line_numbers=True,
    )


def _spans(split: str, sizes: dict[str, int], name: str, split_key: str) -> list[tuple[str, int, int]]:
    from datasets import ReadInstruction

    try:
        return [(i.splitname, i.from_, i.to) for i in ReadInstruction.from_spec(split).to_absolute(sizes)]
    except (ValueError, AssertionError) as err:
        splits = ", ".join(sizes)
        raise DataError(
            f"{split_key}: {name} has no split '{split}' ({_first_line(err)}; its splits: {splits})"
        ) from None


def _from_disk(path: Path, split: str, key: str, split_key: str) -> Records:
    from datasets import Dataset, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"{key}: {path}: cannot load this save_to_disk directory ({_first_line(err)})") from None
    splits = {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    spans = _spans(split, {name: len(part) for name, part in splits.items()}, str(path), split_key)
    rows: list[dict] = []
    where: list[str] = []
    for name, start, stop in spans:
        part = splits[name].select(range(start, stop))
        rows += part.to_list()
        where += [f"{path} ({name}) row {i}" for i in range(start, stop)]
    columns = list(dict.fromkeys(c for name, _, _ in spans for c in splits[name].column_names))
    return Records(rows=rows, where=where, name=str(path), columns=columns)


def _from_datasets(
    name: str,
    key: str,
    split_key: str,
    split: str,
    builder: str,
    data_files: str | None = None,
    subset: str | None = None,
    hub: bool = False,
) -> Records:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        loaded = datasets.load_dataset(builder, subset, data_files=data_files, split=split)
    except ConnectionError:
        # no network, or HF_HUB_OFFLINE=1 with nothing in the cache for this name
        raise DataError(
            f"{key}: {name} is not a file or directory here and the Hugging Face Hub cannot be reached (nor does "
            f"the HF cache hold it): on a machine with network run datasets.load_dataset('{name}'"
            + (f", '{subset}'" if subset else "")
            + f").save_to_disk('DIR'), copy DIR here and set {key}=DIR"
        ) from None
    except DatasetNotFoundError:
        raise DataError(f"{key}: {name}: no such file or directory, nor a dataset of that name on the hub") from None
    except ValueError as err:
        message = _first_line(err)
        if "split" in message.lower():
            raise DataError(f"{split_key}: {name}: {message}") from None
        if "config" in message.lower():
            raise DataError(f"data.subset ({subset}): {name}: {message}") from None
        raise DataError(f"{key}: {name}: {message}") from None
    except StopIteration:  # the json builder on an empty file
        raise DataError(f"{key}: {name}: holds no rows") from None
    except Exception as err:  # noqa: BLE001 - any reader failure (pyarrow's, a builder's) is the file's problem
        cause = err.__cause__ or err.__context__ or err
        reason = _first_line(err) if cause is err else f"{_first_line(err)}: {_first_line(cause)}"
        raise DataError(f"{key}: {name}: cannot read it ({reason})") from None
    label = f"{name} ({split})" if hub or split != "train" else name
    rows = loaded.to_list()
    return Records(
        rows=rows, where=[f"{label} row {i}" for i in range(len(rows))], name=label, columns=loaded.column_names
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
