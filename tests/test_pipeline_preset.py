"""The pipeline preset's typed schema, its chains read from the stage table, and the summary (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.errors import PresetError
from eulerforge_trl.pipeline.full import pipeline_summary, read_pipeline_preset


def _pipeline(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipe.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(PresetError) as info:
        read_pipeline_preset(path)
    return str(info.value)


def test_stages_run_in_the_order_their_inputs_give(tmp_path):
    path = _pipeline(tmp_path, "stages:\n  ppo: c.yml\n  sft: a.yml\n  rm: sub/b.yml\n")
    assert read_pipeline_preset(path) == {
        "sft": tmp_path / "a.yml",
        "rm": tmp_path / "sub/b.yml",
        "ppo": tmp_path / "c.yml",
    }
    assert list(read_pipeline_preset(_pipeline(tmp_path, "stages: {dpo: d.yml, sft: a.yml}\n"))) == ["sft", "dpo"]


def test_unknown_stage_names_the_closest_and_the_line(tmp_path):
    path = _pipeline(tmp_path, "# a pipeline\nstages:\n  sft: a.yml\n  ppp: c.yml\n")
    message = _error(path)
    assert message.startswith(f"{path}:4: stages.ppp: unknown key") and "Did you mean" in message and "ppo" in message


def test_unknown_top_level_key_names_the_closest(tmp_path):
    message = _error(_pipeline(tmp_path, "stage:\n  sft: a.yml\n"))
    assert ":1: stage: unknown key" in message and "stages" in message


@pytest.mark.parametrize(
    "text", ["stages:\n  sft: a.yml\n  rm: b.yml\n  dpo: c.yml\n", "stages:\n  rm: b.yml\n", "stages: {}\n", ""]
)
def test_stages_that_are_not_a_chain_list_the_valid_ones(tmp_path, text):
    message = _error(_pipeline(tmp_path, text))
    from eulerforge_trl.stages import pipeline_chains

    assert "stages must be one of " + " | ".join(", ".join(c) for c in pipeline_chains()) in message


@pytest.mark.parametrize("text", ["stages: a.yml\n", "- sft\n"])
def test_a_pipeline_preset_is_a_mapping_of_stages(tmp_path, text):
    assert "a pipeline preset holds only `stages: {sft: ..., rm: ..., ppo: ...}`" in _error(_pipeline(tmp_path, text))


def test_invalid_yaml_gives_the_line(tmp_path):
    path = _pipeline(tmp_path, "stages:\n  sft: [a.yml\n")
    assert _error(path).startswith(f"{path}:") and "not valid YAML" in _error(path)


def test_shipped_pipeline_by_name():
    stages = read_pipeline_preset("tiny_pipeline")
    assert [p.name for p in stages.values()] == ["tiny_sft.yml", "tiny_rm.yml", "tiny_ppo.yml"]
    assert all(p.is_file() for p in stages.values())


def test_bad_pipeline_preset_is_exit_2(tmp_path, capsys):
    assert pipeline_main([str(_pipeline(tmp_path, "stages:\n  sfx: a.yml\n"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "stages.sfx" in err and "Traceback" not in err


def test_pipeline_help_answers(capsys):
    with pytest.raises(SystemExit) as info:
        pipeline_main(["--help"])
    assert info.value.code == 0 and "STAGE.KEY=VALUE" in capsys.readouterr().out


def _metrics(path: Path, records: list[dict]) -> None:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_summary_lines(tmp_path):
    _metrics(tmp_path / "01_sft", [{"step": 1, "loss": 6.0}, {"step": 2, "loss": 1.5, "eval_loss": 1.25}])
    _metrics(
        tmp_path / "02_rm",
        [{"step": 1, "loss": 0.7}, {"step": 2, "final_eval": True, "eval_accuracy": 1.0, "eval_margin": 11.234}],
    )
    ppo = [{"step": i, "reward_mean": float(i), "kl_divergence": 0.1 * i} for i in range(1, 21)]
    _metrics(tmp_path / "03_ppo", [{"step": 0, "eval_reward_mean": -1.0}, *ppo, {"step": 20, "eval_reward_mean": 2.0}])
    _metrics(
        tmp_path / "02_dpo",
        [{"step": 1, "loss": 0.69, "rewards/margins": 0.0}, {"step": 2, "loss": 0.5, "rewards/margins": 0.25}],
    )
    (tmp_path / "01_sft" / "training_curves.png").write_bytes(b"")
    assert pipeline_summary(tmp_path, ["sft", "rm", "ppo", "dpo"]).splitlines() == [
        f"pipeline summary ({tmp_path})",
        f"   sft: loss 6.000 -> 1.500, eval_loss 1.250; plot {tmp_path / '01_sft' / 'training_curves.png'}",
        "    rm: held-out accuracy 1.000, margin 11.23",
        "   ppo: reward_mean 1.500 (first 10%) -> 19.500 (last 10%), kl_divergence last 2.000; "
        "held-out prompts: reward -1.000 -> 2.000",
        "   dpo: loss 0.690 -> 0.500, preference margin 0.000 -> 0.250",
    ]
