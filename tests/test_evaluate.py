"""`eulerforge evaluate` end to end on real (tiny) stage outputs, through `cli.main([...])`.

The models are built in seconds: a random-init tiny model saved as a full "SFT" `final/`, a 2-step
RM and a 2-step PPO on it. Their scores mean nothing; what is checked is the bookkeeping: every
sample is there, the RM scores are what `score` gives, the judge gets its columns, the first model
is the baseline, a copy of it on another path (loaded on its own) samples the same with KL 0.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from eulerforge_trl import cli
from eulerforge_trl.evaluation.report import COLUMNS as METRICS

N_PROMPTS, N_SAMPLES = 5, 2

JUDGE = """
from eulerforge_trl.examples.animals import pleasant_score


def judge(prompts, completions, hint, completion_ids, **kwargs):
    assert len(completion_ids) == len(completions)
    return [h + float(pleasant_score(p, c) >= 0) for p, c, h in zip(prompts, completions, hint)]


def raises(prompts, completions, **kwargs):
    return [1.0 / 0 for _ in completions]


def short(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)


def words(prompts, completions, **kwargs):
    return ["good"] * len(completions)
"""


def _train(tiny_argv, preset: str, out: Path, *overrides: str) -> Path:
    argv = tiny_argv(preset, out, *overrides)
    assert cli.main(["train", "--preset", argv[0], *argv[1:]]) == 0
    return out / "final"


@pytest.fixture(scope="module")
def finals(tmp_path_factory, tiny_argv):
    """(sft, rm, ppo) final/ directories: a random tiny model, a 2-step RM and a 2-step PPO on it."""
    from eulerforge_trl.models.tiny import build_tiny_model, load_tiny_tokenizer

    root = tmp_path_factory.mktemp("evaluate_models")
    sft = root / "01_sft" / "final"
    build_tiny_model().save_pretrained(sft)
    load_tiny_tokenizer().save_pretrained(sft)
    rm = _train(
        tiny_argv,
        "tiny_rm.yml",
        root / "02_rm",
        f"model_name={sft}",
        "training.max_steps=2",
        "training.batch_size=8",
        "data.eval_path=",
    )
    ppo = _train(
        tiny_argv,
        "tiny_ppo.yml",
        root / "03_ppo",
        f"model_name={sft}",
        f"training.reward_model.checkpoint_path={rm}",
        "training.max_steps=2",
        "training.batch_size=8",
        "training.ppo.max_gen_len=8",
        "training.ppo.num_mini_batches=1",
        "training.ppo.epochs=1",
    )
    return sft, rm, ppo


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory, example_data) -> Path:
    """The held-out SFT prompts with an extra column, `hint`, that the judge adds to its score."""
    rows = [json.loads(line) for line in (example_data / "sft_eval.jsonl").read_text().splitlines()[:N_PROMPTS]]
    path = tmp_path_factory.mktemp("evaluate_prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "hint": 10 * i}) + "\n" for i, r in enumerate(rows)))
    return path


@pytest.fixture(scope="module")
def judge_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evaluate_judge") / "my_judge.py"
    path.write_text(JUDGE)
    return path


def _evaluate(models, prompts, out, *extra) -> list[str]:
    return [
        "evaluate",
        "--models",
        *map(str, models),
        "--prompts",
        str(prompts),
        "--output",
        str(out),
        "--max-new-tokens",
        "12",
        *extra,
    ]


@pytest.fixture(scope="module")
def evaluated(finals, prompts_file, judge_file, tmp_path_factory):
    """One evaluation of SFT, PPO and a copy of the SFT directory (another path: loaded on its own)."""
    import contextlib
    import io

    sft, rm, ppo = finals
    copy = tmp_path_factory.mktemp("evaluate_copy") / "final"
    shutil.copytree(sft, copy)
    out = tmp_path_factory.mktemp("evaluate_out")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(
            _evaluate(
                [sft, ppo, copy],
                prompts_file,
                out,
                "--reward",
                str(rm),
                "--judge",
                f"{judge_file}:judge",
                "--num-samples",
                str(N_SAMPLES),
            )
        )
    assert code == 0
    return [str(sft), str(ppo), str(copy)], out, printed.getvalue()


def test_summary_has_every_model_and_sane_numbers(evaluated):
    names, out, printed = evaluated
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == names
    for row in summary.values():
        assert set(row) == set(METRICS)
        assert 0.0 <= row["win_rate_vs_first"] <= 1.0
        assert row["response_length"] > 0
        assert all(isinstance(row[m], float) for m in METRICS)
    first = summary[names[0]]
    assert first["kl_to_first"] == 0.0 and first["win_rate_vs_first"] == 0.5
    for name in names:
        assert name in printed
    assert "reward_mean" in printed and "win_rate_vs_first" in printed


def test_samples_file_holds_models_x_prompts_x_samples(evaluated):
    names, out, _ = evaluated
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == len(names) * N_PROMPTS * N_SAMPLES
    assert [r["model"] for r in lines] == [n for n in names for _ in range(N_PROMPTS * N_SAMPLES)]
    assert {(r["prompt_index"], r["sample"]) for r in lines} == {
        (p, k) for p in range(N_PROMPTS) for k in range(N_SAMPLES)
    }
    summary = json.loads((out / "summary.json").read_text())
    for name in names:
        mine = [r for r in lines if r["model"] == name]
        assert summary[name]["reward_mean"] == pytest.approx(sum(r["reward"] for r in mine) / len(mine))
        assert summary[name]["response_length"] == pytest.approx(sum(r["response_length"] for r in mine) / len(mine))


def test_rm_scores_are_what_score_gives(evaluated, finals):
    from eulerforge_trl import load_reward_model, score

    _, out, _ = evaluated
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    scorer, tokenizer = load_reward_model(str(finals[1]))
    direct = score(scorer, tokenizer, [r["prompt"] for r in lines], [r["response"] for r in lines])
    assert [r["reward"] for r in lines] == pytest.approx(direct, abs=1e-4)


def test_judge_gets_the_data_columns(evaluated):
    from eulerforge_trl.examples.animals import pleasant_score

    _, out, _ = evaluated
    for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines()):
        assert r["judge"] == 10 * r["prompt_index"] + float(pleasant_score(r["prompt"], r["response"]) >= 0)


def test_same_seed_same_samples_and_kl_zero_for_the_same_weights(evaluated):
    """The copy of the first model is loaded on its own, the first is the shared base with adapters off."""
    names, out, _ = evaluated
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    first = [r["response"] for r in lines if r["model"] == names[0]]
    copy = [r for r in lines if r["model"] == names[2]]
    assert [r["response"] for r in copy] == first
    assert all(abs(r["kl_to_first"]) < 1e-4 for r in copy)
    summary = json.loads((out / "summary.json").read_text())
    assert summary[names[2]]["win_rate_vs_first"] == 0.5
    assert summary[names[2]]["reward_mean"] == pytest.approx(summary[names[0]]["reward_mean"], abs=1e-4)


def test_bar_chart_is_written(evaluated):
    _, out, _ = evaluated
    png = (out / "summary.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


# ------------------------------------------------------------------------------ user mistakes


def _user_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}, stderr:\n{captured.err}"
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    return errors[0].removeprefix("error: ")


@pytest.mark.parametrize(
    "fn, expected",
    [
        ("raises", "raised ZeroDivisionError"),
        ("short", f"returned {N_PROMPTS - 1} values for {N_PROMPTS} completions"),
        ("words", "value 0 is str 'good', not a number"),
    ],
)
def test_a_judge_that_fails_is_one_line_naming_it(fn, expected, finals, prompts_file, judge_file, tmp_path, capsys):
    spec = f"{judge_file}:{fn}"
    message = _user_error(capsys, cli.main(_evaluate([finals[0]], prompts_file, tmp_path, "--judge", spec)))
    assert message.startswith(f"--judge {spec}: ") and expected in message
    if fn == "raises":
        assert "my_judge.py:" in message  # where in the user's file


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("no_colon", "expected package.module:function or path/to/file.py:function"),
        ("missing_file.py:judge", "file not found"),
        ("eulerforge_trl.nonexistent:judge", "no module named 'eulerforge_trl.nonexistent'"),
        ("eulerforge_trl.examples.animals:nonexistent", "has no function 'nonexistent'"),
    ],
)
def test_a_bad_judge_spec_stops_before_loading_models(spec, expected, prompts_file, tmp_path, capsys):
    model = tmp_path / "no_model_here"  # never looked at: the judge is checked first
    message = _user_error(capsys, cli.main(_evaluate([model], prompts_file, tmp_path / "out", "--judge", spec)))
    assert message.startswith(f"--judge {spec}") and expected in message


def test_a_models_dir_without_final_files_is_named(prompts_file, tmp_path, capsys):
    stage = tmp_path / "03_ppo"
    (stage / "final").mkdir(parents=True)
    message = _user_error(capsys, cli.main(_evaluate([stage], prompts_file, tmp_path / "out")))
    assert message.startswith(f"--models {stage}: ") and f"did you mean {stage / 'final'}" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _user_error(capsys, cli.main(_evaluate([empty], prompts_file, tmp_path / "out")))
    assert message.startswith(f"--models {empty}: holds no config.json or adapter_config.json")
    message = _user_error(capsys, cli.main(_evaluate([tmp_path / "absent"], prompts_file, tmp_path / "out")))
    assert "--models" in message and "no such directory" in message


def test_an_rm_in_models_and_a_model_in_reward_are_named(finals, prompts_file, tmp_path, capsys):
    sft, rm, _ = finals
    message = _user_error(capsys, cli.main(_evaluate([rm], prompts_file, tmp_path)))
    assert message.startswith(f"--models {rm}: ") and "--reward" in message
    message = _user_error(capsys, cli.main(_evaluate([sft], prompts_file, tmp_path, "--reward", str(sft))))
    assert message.startswith(f"--reward {sft}: not a reward model")


def test_an_rm_of_another_base_follows_the_same_base_rule_of_ppo(finals, prompts_file, tmp_path, capsys, caplog):
    """One rule wherever an RM scores (models.fingerprint.check_same_base): other weights of the same
    shapes warn with both fingerprints and still score; other shapes are refused, named by --reward."""
    sft, rm, _ = finals
    other = tmp_path / "rm_other"
    shutil.copytree(rm, other)
    meta = json.loads((other / "reward_meta.json").read_text())
    meta.update(base_model="/somewhere/else/final", fingerprint="0" * 16)
    (other / "reward_meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.models.fingerprint"):
        code = cli.main(_evaluate([sft], prompts_file, tmp_path / "out", "--reward", str(other)))
    assert code == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("/somewhere/else/final" in w and "0" * 16 in w for w in warnings), warnings
    meta.update(hidden_size=meta["hidden_size"] * 2)
    (other / "reward_meta.json").write_text(json.dumps(meta))
    message = _user_error(capsys, cli.main(_evaluate([sft], prompts_file, tmp_path / "out2", "--reward", str(other))))
    assert message.startswith(f"--reward {other}: the RM was trained on base /somewhere/else/final")


def test_other_flag_mistakes(finals, prompts_file, tmp_path, capsys):
    sft = str(finals[0])
    message = _user_error(capsys, cli.main(_evaluate([sft, sft], prompts_file, tmp_path)))
    assert message == f"--models: {sft} is given twice"
    message = _user_error(capsys, cli.main(_evaluate([sft], prompts_file, tmp_path, "--num-samples", "0")))
    assert message == "--num-samples (0) must be >= 1"
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    message = _user_error(capsys, cli.main(_evaluate([sft], prompts_file, a_file)))
    assert message == f"--output {a_file}: is a file, not a directory"
    message = _user_error(capsys, cli.main(_evaluate([sft], tmp_path / "none.jsonl", tmp_path)))
    assert message.startswith("--prompts: file not found")
