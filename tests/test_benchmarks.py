"""The benchmark scripts run on the current code: our PPO and GRPO steps at the smallest shape.

They build their trainers from `eulerforge_trl` internals (the PPO trainer, the GRPO stage's
`GRPOTrainer` name), so a change there could break `make bench` without any other test noticing.
Run in this process (no interpreter start-up) at a shape that takes about a second; timings are
not checked here, only that the numbers the JSON line promises are there and consistent. The
peer (TRL 1.12 in its own venv) is not run: installing it takes minutes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = [
    "--hidden", "16", "--layers", "2", "--batch", "4", "--prompt-len", "4", "--response-len", "4",
    "--lora-r", "2", "--ppo-epochs", "2", "--steps", "1", "--warmup", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    """The benchmark modules; the random-head warning they silence is restored for later tests."""
    scorer_log = logging.getLogger("eulerforge_trl.models.scorer")
    level = scorer_log.level
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compare
        import grpo_step
        import ppo_step

        yield {"ppo_step": ppo_step, "grpo_step": grpo_step, "compare": compare}
    finally:
        sys.path.remove(str(BENCHMARKS))
        scorer_log.setLevel(level)


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ppo_step_reports_every_phase_against_its_floor(bench, capsys):
    assert bench["ppo_step"].main([*SMALL, "--json-only"]) == 0
    result = last_json(capsys)
    phases = [result[f"{name}_s"] for name in bench["ppo_step"].PHASES.values()]
    assert all(t >= 0 for t in phases) and result["step_s"] >= sum(phases) - 1e-3
    assert result["floor_s"] > 0 and result["step_over_floor"] == pytest.approx(
        result["step_s"] / result["floor_s"], rel=0.01
    )
    assert (result["hidden"], result["layers"], result["batch"], result["generated_len"]) == (16, 2, 4, 4)


def test_grpo_step_times_batch_completions_a_step(bench, capsys):
    assert bench["grpo_step"].main([*SMALL, "--num-generations", "2", "--json-only"]) == 0
    result = last_json(capsys)
    assert (result["samples_per_step"], result["prompts_per_step"], result["num_generations"]) == (4, 2, 2)
    assert len(result["step_times_s"]) == 1 and result["step_s"] > 0 and result["peak_mem_mib"] > 0
    assert 1 <= result["completion_len_mean"] <= 4


def test_compare_names_a_bad_model_in_one_line(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench["compare"].main(["--model", "no-such-model"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model no-such-model") and "smollm2-135m-instruct" in err and "\n" not in err


@pytest.mark.slow  # two short trainings and an evaluation through the CLI
def test_verifiable_reward_reports_exact_match_kl_and_length_per_stage(tmp_path, capsys):
    """benchmarks/verifiable_reward.py end to end on the tiny model, plain-text problems with an answer
    column (the tiny tokenizer has no chat template for the shipped message-list problems)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import verifiable_reward
    finally:
        sys.path.remove(str(BENCHMARKS))
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a} + 1 =", "answer": a + 1}) + "\n" for a in range(40)))
    args = ["--output", str(tmp_path / "out"), "--model", "tiny-qwen3.5", "--grpo-steps", "1", "--ppo-steps", "1"]
    args += ["--set", f"data.path={data}", "--ppo-set", f"data.path={data}", "--prompts", str(data)]
    assert verifiable_reward.main([*args, "--max-prompts", "4", "--max-new-tokens", "4"]) == 0
    result = last_json(capsys)
    assert 0.0 <= result["start"]["exact_match"] <= 1.0
    for stage in ("grpo", "ppo"):
        row = result[stage]
        assert 0.0 <= row["exact_match"] <= 1.0 and row["points"] == round(
            100 * (row["exact_match"] - result["start"]["exact_match"]), 1
        )
        assert row["kl_to_start"] is not None and row["response_length"] > 0
        assert row["train_kl_last10"] is not None and row["train_response_length_last10"] > 0
        assert row["train_seconds"] > 0
    # a rerun reuses the finished stages: no training, the same evaluation
    assert verifiable_reward.main([*args, "--max-prompts", "4", "--max-new-tokens", "4"]) == 0
    again = last_json(capsys)
    assert again["grpo"]["train_seconds"] is None and again["grpo"]["exact_match"] == result["grpo"]["exact_match"]
