"""Every source `datasets` reads: JSON, parquet, CSV, save_to_disk directories, hub names (offline),
`data.split` / `data.subset` / `data.columns`, and the one-line errors for what is missing."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from eulerforge_trl.config.schema import DataSection
from eulerforge_trl.data.jsonl import extra_columns, load_splits, read_data, read_rows, split_rows
from eulerforge_trl.errors import DataError

QA = [{"question": f"Q{i}", "answer": f"A{i}", "source": "web"} for i in range(6)]
SFT = [{"prompt": f"Q{i}", "response": f"A{i}"} for i in range(6)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write(path: Path, rows: list[dict]) -> Path:
    """`rows` as a .jsonl, .json (one array), .parquet or .csv file, by `path`'s suffix."""
    if path.suffix == ".jsonl":
        return _jsonl(path, rows)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_file_format_reads_with_a_column_mapping(suffix, tmp_path):
    path = _write(tmp_path / f"qa{suffix}", QA)
    columns = {"question": "prompt", "answer": "response"}
    assert read_rows(path, "sft", columns=columns) == SFT
    assert extra_columns(path, "sft", columns=columns) == {"source": ["web"] * 6}


def test_save_to_disk_directories_and_their_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(SFT).save_to_disk(tmp_path / "one")
    assert read_rows(tmp_path / "one", "sft") == SFT
    assert read_rows(tmp_path / "one", "sft", split="train[:2]") == SFT[:2]
    DatasetDict({"train": Dataset.from_list(SFT), "test": Dataset.from_list(SFT[:1])}).save_to_disk(tmp_path / "dd")
    assert read_rows(tmp_path / "dd", "sft") == SFT
    assert read_rows(tmp_path / "dd", "sft", split="test") == SFT[:1]
    with pytest.raises(DataError, match=r"^data.split: .*dd has no split 'validation'.*its splits: train, test\)$"):
        read_rows(tmp_path / "dd", "sft", split="validation")


def test_a_preset_data_section_reads_path_and_eval_path_with_their_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"q": f"Q{i}", "a": f"A{i}"} for i in range(6)]
    DatasetDict({"train": Dataset.from_list(rows[:4]), "test": Dataset.from_list(rows[4:])}).save_to_disk(
        tmp_path / "d"
    )
    data = DataSection(
        path=str(tmp_path / "d"), columns={"q": "prompt", "a": "response"}, eval_path=str(tmp_path / "d")
    )
    data.eval_path_split = "test"
    train, evaluation = load_splits(data, seed=0)
    assert train["prompt"] == ["Q0", "Q1", "Q2", "Q3"] and evaluation["prompt"] == ["Q4", "Q5"]
    assert read_data(data, "data.eval_path") == [{"prompt": "Q4", "response": "A4"}, {"prompt": "Q5", "response": "A5"}]


def test_jsonl_takes_split_slices_and_keeps_its_line_numbers(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", SFT[:3] + [{"prompt": "Q"}])
    assert read_rows(path, "sft", split="train[:3]") == SFT[:3]
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:4: missing field 'response'.*data.columns"):
        read_rows(path, "sft", split="train[1:]")
    with pytest.raises(DataError, match=r"^data.split: .* has no split 'test'"):
        read_rows(path, "sft", split="test")


def test_reward_function_columns_follow_their_rows_through_the_split(tmp_path):
    path = _write(tmp_path / "p.parquet", [{"question": f"Q{i}", "gold": str(i)} for i in range(8)])
    data = DataSection(path=str(path), task="prompt_only", columns={"question": "prompt"}, eval_split=0.25)
    train, held_out = split_rows(data, seed=1, columns=True)
    assert len(train) == 6 and len(held_out) == 2
    assert all(row["columns"] == {"gold": row["prompt"][1:]} for row in train + held_out)
    every = read_data(data, columns=True)
    assert [row["columns"]["gold"] for row in every] == [str(i) for i in range(8)]


# ----------------------------------------------------------------------------------- errors


def test_a_missing_column_is_one_line_naming_source_column_and_data_columns(tmp_path):
    path = _write(tmp_path / "qa.parquet", QA)
    with pytest.raises(DataError) as info:
        read_rows(path, "sft", columns={"question": "prompt"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"data.path: {path} has no column 'response'")
    assert "its columns: question, answer, source" in message and "data.columns" in message


def test_a_mapping_from_a_column_the_source_lacks(tmp_path):
    path = _write(tmp_path / "qa.csv", QA)
    with pytest.raises(DataError, match=r"^data.columns maps 'query' but .*qa.csv has no column of that name"):
        read_rows(path, "sft", columns={"query": "prompt"})


def test_jsonl_keeps_file_line_errors_for_a_missing_field(tmp_path):
    path = _jsonl(tmp_path / "qa.jsonl", [QA[0], {"question": "Q"}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: missing field 'response'"):
        read_rows(path, "sft", columns={"question": "prompt", "answer": "response"})


def test_unknown_file_type_and_missing_files(tmp_path):
    odd = tmp_path / "rows.txt"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"^data.path: .*rows.txt: unknown file type '.txt'; use .jsonl, .json"):
        read_rows(odd, "sft")
    for missing in (tmp_path / "gone.parquet", tmp_path / "gone.jsonl"):
        with pytest.raises(DataError, match=rf"^data.path: file not found: {re.escape(str(missing))}$"):
            read_rows(missing, "sft")


def _offline(monkeypatch, cache: Path) -> None:
    """HF_HUB_OFFLINE=1 with `cache` as the datasets cache (both are read when the modules load)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


def test_a_hub_name_offline_with_an_empty_cache_says_what_to_do(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty HF cache: one line, no network attempt, no traceback."""
    _offline(monkeypatch, tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        read_rows("trl-lib/ultrafeedback_binarized", "preference", key="data.eval_path")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data.eval_path: trl-lib/ultrafeedback_binarized is not a file or directory here")
    assert "save_to_disk('DIR')" in message and "set data.eval_path=DIR" in message


def test_a_hub_name_offline_reads_the_hf_cache(tmp_path, monkeypatch):
    """A hub dataset the cache holds loads with HF_HUB_OFFLINE=1. The cache entry is made here as
    `load_dataset("someone/qa")` would have left it (datasets 5.2's layout: someone___qa/default/
    0.0.0/<hash>/qa-train.arrow), from a local parquet file: there is no hub to fetch it from."""
    import datasets

    cache = tmp_path / "cache"
    source = str(_write(tmp_path / "qa.parquet", QA))
    builder = datasets.load_dataset_builder("parquet", data_files=source, cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    entry = cache / "someone___qa" / "default" / "0.0.0" / Path(builder.cache_dir).name
    entry.mkdir(parents=True)
    (entry / "dataset_info.json").write_bytes((Path(builder.cache_dir) / "dataset_info.json").read_bytes())
    (entry / "qa-train.arrow").write_bytes((Path(builder.cache_dir) / "parquet-train.arrow").read_bytes())
    _offline(monkeypatch, cache)
    monkeypatch.chdir(tmp_path)
    assert read_rows("someone/qa", "sft", columns={"question": "prompt", "answer": "response"}) == SFT


def test_a_dataset_directory_with_subsets(tmp_path):
    """A hub-style dataset folder (a clone of a hub repo): data.subset picks a configuration its
    README declares, as `load_dataset(folder, subset)` does."""
    folder = tmp_path / "qa_repo"
    folder.mkdir()
    _jsonl(folder / "easy.jsonl", SFT[:2])
    _jsonl(folder / "hard.jsonl", SFT[2:5])
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: easy\n  data_files: easy.jsonl\n  default: true\n"
        "- config_name: hard\n  data_files: hard.jsonl\n---\n",
        encoding="utf-8",
    )
    assert read_rows(folder, "sft") == SFT[:2]
    assert read_rows(folder, "sft", subset="hard") == SFT[2:5]
    with pytest.raises(DataError, match=r"^data.subset \(medium\): .*qa_repo: .*'medium' not found. Available"):
        read_rows(folder, "sft", subset="medium")
