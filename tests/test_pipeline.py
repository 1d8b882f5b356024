"""The whole pipeline in one command, its rerun behaviour, and the example notebook."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eulerforge_trl.cli import main as eulerforge_main
from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.rundir import read_metrics

pytestmark = pytest.mark.slow  # the whole tiny pipeline and the example notebook: ~60 s

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "--set",
    "sft.training.max_steps=40",
    "--set",
    "sft.training.report_to=[]",
    "--set",
    "rm.training.max_steps=20",
    "--set",
    "rm.training.report_to=[]",
    "--set",
    "ppo.training.max_steps=3",
    "--set",
    "ppo.training.batch_size=8",
    "--set",
    "ppo.training.report_to=[]",
]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    cwd = os.getcwd()
    os.chdir(REPO)  # the presets name their data relative to the repository root
    try:
        code = pipeline_main(["presets/tiny_pipeline.yml", "--output-dir", str(out), *QUICK])
    finally:
        os.chdir(cwd)
    assert code == 0
    return out


def test_pipeline_runs_every_stage_feeding_the_next(pipeline_run, capsys):
    for stage_dir in ("01_sft", "02_rm", "03_ppo"):
        assert (pipeline_run / stage_dir / "final" / "eulerforge_final.json").is_file(), stage_dir
    rm_preset = (pipeline_run / "02_rm" / "preset.yml").read_text()
    assert f"model_name: {pipeline_run / '01_sft' / 'final'}" in rm_preset
    ppo_preset = (pipeline_run / "03_ppo" / "preset.yml").read_text()
    assert f"checkpoint_path: {pipeline_run / '02_rm' / 'final'}" in ppo_preset
    steps = [r["step"] for r in read_metrics(pipeline_run / "03_ppo" / "metrics.jsonl") if "reward_mean" in r]
    assert steps == [1, 2, 3]


def test_rerun_skips_finished_stages_and_prints_a_summary(pipeline_run, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    before = (pipeline_run / "03_ppo" / "metrics.jsonl").read_text()
    assert eulerforge_main(["pipeline", "presets/tiny_pipeline.yml", "--output-dir", str(pipeline_run), *QUICK]) == 0
    out = capsys.readouterr().out
    assert out.count("is complete, skipping") == 3
    assert "held-out accuracy" in out and "reward_mean" in out and "loss" in out
    assert (pipeline_run / "03_ppo" / "metrics.jsonl").read_text() == before


def test_pipeline_override_without_stage_prefix_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert pipeline_main(["presets/tiny_pipeline.yml", "--output-dir", str(tmp_path), "--set", "training.lr=1"]) == 2
    assert "start with a stage name" in capsys.readouterr().err


def test_a_copied_pipeline_preset_finds_the_shipped_stage_presets(tmp_path, monkeypatch):
    from eulerforge_trl.config.shipped import SHIPPED_DIR
    from eulerforge_trl.pipeline.full import read_pipeline_preset

    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "my.yml").write_text((REPO / "presets" / "tiny_pipeline.yml").read_text())
    (tmp_path / "presets" / "tiny_rm.yml").write_text((REPO / "presets" / "tiny_rm.yml").read_text())
    monkeypatch.chdir(tmp_path)
    # a file beside the pipeline preset still wins; a name not found there is the shipped preset
    assert read_pipeline_preset("presets/my.yml") == {
        "sft": SHIPPED_DIR / "tiny_sft.yml",
        "rm": Path("presets/tiny_rm.yml"),
        "ppo": SHIPPED_DIR / "tiny_ppo.yml",
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ppo.training.nosuch=2", "tiny_ppo.yml (in --set): training.nosuch: unknown key"),
        ("ppo.training.ppo.kl_coef=abc", "tiny_ppo.yml (in --set): training.ppo.kl_coef: Value 'abc'"),
        ("ppo.data.path=missing.jsonl", "tiny_ppo.yml): data.path: file not found: missing.jsonl"),
        ("rm.data.eval_path=missing.jsonl", "tiny_rm.yml): data.eval_path: file not found: missing.jsonl"),
    ],
)
def test_a_later_stage_s_bad_override_fails_before_anything_trains(tmp_path, capsys, monkeypatch, override, message):
    # from a copy in another folder: the shipped stage presets, their shipped data, nothing trained yet
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "my.yml").write_text((REPO / "presets" / "tiny_pipeline.yml").read_text())
    monkeypatch.chdir(tmp_path)
    assert pipeline_main(["presets/my.yml", "--output-dir", "out", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_example_notebook_runs(tmp_path):
    """From a directory that is not the repository's: the shipped presets are found by name."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "examples" / "pipeline.ipynb", as_version=4)
    os.environ["EULERFORGE_NOTEBOOK_OUT"] = str(tmp_path / "nb")
    os.environ["EULERFORGE_NOTEBOOK_QUICK"] = "1"
    try:
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        del os.environ["EULERFORGE_NOTEBOOK_OUT"], os.environ["EULERFORGE_NOTEBOOK_QUICK"]
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "SFT loss" in outputs and "held-out accuracy" in outputs and "PPO reward_mean" in outputs
    assert (tmp_path / "nb" / "03_ppo" / "final" / "eulerforge_final.json").is_file()
