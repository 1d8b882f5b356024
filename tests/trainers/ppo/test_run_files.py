"""What a PPO run leaves in its output directory when it starts over or resumes: no line twice."""

import json
from collections import Counter

from eulerforge_trl.rundir import RunDir, read_metrics, start_run, trim_metrics
from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

from .test_ppo_trainer import tiny_ppo_preset


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _lines(path, step):
    return sum(1 for s in _steps(path) if s == step)


def _ppo(tmp_path, *overrides):
    # 16 prompts, 4 held out: evaluated at step 0 and after the last step; samples at steps 1 and 2
    return tiny_ppo_preset(
        tmp_path,
        "data.eval_split=0.25",
        "training.ppo.sample_every=1",
        "training.ppo.score_norm_samples=4",
        "training.save_steps=1",
        *overrides,
    )


def _check_one_run(run: RunDir):
    assert [r["step"] for r in read_metrics(run.metrics)] == [0, 1, 2, 2]  # step 0, two steps, the last eval
    assert Counter(_steps(run.samples)) == {1: 2, 2: 2}  # num_samples rows per written step
    assert sorted(set(_steps(run.eval_samples))) == [0, 2]
    assert _lines(run.eval_samples, 0) == _lines(run.eval_samples, 2)


def test_a_run_from_step_0_starts_its_logs_fresh_and_a_resume_logs_nothing_twice(tmp_path):
    preset = _ppo(tmp_path, "training.ppo.num_samples=2")
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    PPOTrainer(preset, run).train()
    _check_one_run(run)
    first = {p: p.read_text() for p in (run.metrics, run.samples, run.eval_samples)}

    PPOTrainer(preset, run).train()  # no checkpoint asked for (--no-resume, or killed before the first save)
    _check_one_run(run)

    # resumed from the last checkpoint: nothing to train, the last evaluation replaces the old one
    PPOTrainer(preset, run).train(resume_from=str(run.checkpoint_dir(2)))
    _check_one_run(run)

    # resumed from checkpoint-1: step 2 and the last evaluation come again, once
    PPOTrainer(preset, run).train(resume_from=str(run.checkpoint_dir(1)))
    _check_one_run(run)
    assert [json.loads(line)["step"] for line in first[run.metrics].splitlines()] == [0, 1, 2, 2]


def test_preset_yml_is_written_when_training_starts_not_before(tmp_path):
    preset = _ppo(tmp_path, "training.max_steps=1")
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    run.preset.write_text("the previous run's\n")
    run.metrics.write_text(json.dumps({"step": 0, "old": 1}) + "\n")
    trainer = PPOTrainer(preset, run)  # data and models loaded: nothing written yet
    assert run.preset.read_text() == "the previous run's\n"
    assert read_metrics(run.metrics) == [{"step": 0, "old": 1}]
    trainer.train()
    assert "type: ppo" in run.preset.read_text()
    assert all("old" not in r for r in read_metrics(run.metrics))


def test_trim_metrics_keeps_what_a_checkpoint_had_seen(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [{"step": 0}, {"step": 1}, {"step": 2, "a": 1}, {"step": 2, "eval": 1}, {"step": 3}]
    text = "".join(json.dumps(r) + "\n" for r in lines)
    path.write_text(text)
    trim_metrics(path, 0)
    assert path.read_text() == ""  # from step 0: fresh, the step-0 line too
    path.write_text(text)
    trim_metrics(path, 2)
    assert read_metrics(path) == lines[:4]
    path.write_text(text)
    trim_metrics(path, 2, at_step=1)
    assert read_metrics(path) == lines[:3]
    path.write_text(text)
    trim_metrics(path, 2, at_step=0)
    assert read_metrics(path) == lines[:2]


def test_start_run_writes_preset_and_trims_every_log(tmp_path):
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    for path in (run.metrics, run.samples, run.eval_samples):
        path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2)))
    start_run(run, "x: 1\n", 1, metric_lines_at_step=1, eval_lines_at_step=0)
    assert run.preset.read_text() == "x: 1\n"
    assert (_steps(run.metrics), _steps(run.samples), _steps(run.eval_samples)) == ([0, 1], [0, 1], [0])
    start_run(run, "x: 2\n", 0)
    assert [p.read_text() for p in (run.metrics, run.samples, run.eval_samples)] == ["", "", ""]
