"""GRPO input that TRL would run on silently or crash on is one line and exit 2, before the model loads.

- fewer training prompts than one step takes: TRL's `RepeatSampler` drops the incomplete batch and
  the run would train nothing yet exit 0;
- a data column whose values mix types: Arrow cannot hold it (pyarrow's ArrowInvalid);
- a reward function returning +-inf, through the wrapper TRL calls (`user_reward`);
- `generation.compile=true` on a bitsandbytes-quantized base, which transformers never compiles.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import DataError, UserError
from eulerforge_trl.rewards.sources import RewardFunction
from eulerforge_trl.train import main
from eulerforge_trl.trainers.group_policy import as_dataset, require_one_step
from eulerforge_trl.trainers.group_rewards import user_reward
from eulerforge_trl.trainers.grpo_generation import grpo_generation_args

FUNCTION = "eulerforge_trl.examples.animals:well_formed"


def _prompts(path, rows: list[dict]):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _argv(tiny_argv, tmp_path, data, *overrides):
    return tiny_argv(
        "tiny_grpo.yml",
        tmp_path / "out",
        "model_name=tiny-qwen3.5",
        "training.reward_model.checkpoint_path=",
        f"training.reward_funcs=[{FUNCTION}]",
        f"data.path={data}",
        "data.eval_path=null",
        "data.eval_split=0",
        "training.batch_size=4",
        "training.grpo.num_generations=2",
        "training.max_steps=1",
        *overrides,
    )


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "Traceback"))]
    assert len(err) == 1, err
    return err[0]


def test_too_few_prompts_for_one_step_is_refused(tmp_path, tiny_argv, capsys):
    data = _prompts(tmp_path / "one.jsonl", [{"prompt": "Describe the dog.\nAnswer:"}])
    assert main(_argv(tiny_argv, tmp_path, data)) == 2
    line = _one_error_line(capsys)
    assert f"data.path {data}: 1 training prompt, fewer than one GRPO step needs" in line
    assert "training.grpo.num_generations (2) = 2 prompts" in line
    assert not (tmp_path / "out" / "final").exists()


def test_prompts_needed_follow_trl_sampler(tmp_path, tiny_argv):
    data = _prompts(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(3)])

    def preset(*overrides):
        argv = _argv(tiny_argv, tmp_path, data, *overrides)
        return load_preset(argv[0], [argv[i + 1] for i, flag in enumerate(argv) if flag == "--set"])

    require_one_step(preset(), 2, 1)  # 4 completions / 2 generations = 2 prompts
    with pytest.raises(DataError, match=r"= 4 prompts"):
        require_one_step(preset("training.grad_accum=2"), 3, 1)
    with pytest.raises(DataError, match=r"x processes \(2\) .* = 4 prompts"):
        require_one_step(preset(), 3, 2)
    require_one_step(preset("training.batch_size=8", "training.grpo.num_generations=4"), 2, 1)


def test_a_column_of_mixed_types_is_one_line_naming_it(tmp_path, tiny_argv, capsys):
    rows = [{"prompt": f"Describe animal {i}.\nAnswer:", "target": 5 if i % 2 == 0 else "cat"} for i in range(4)]
    data = _prompts(tmp_path / "mixed.jsonl", rows)
    assert main(_argv(tiny_argv, tmp_path, data)) == 2
    line = _one_error_line(capsys)
    assert f"data.path {data}: column 'target' mixes value types" in line
    with pytest.raises(DataError, match=r"^data.eval_path e.jsonl: column 'x' mixes value types"):
        as_dataset([{"prompt": "a", "x": "cat"}, {"prompt": "b", "x": 5}], "data.eval_path", "e.jsonl")
    assert as_dataset(rows[:1], "data.path", "p").column_names == ["prompt", "target"]


def test_an_infinite_reward_stops_the_wrapper_trl_calls():
    def some_inf(prompts, completions, **kwargs):
        return [math.inf if i == 0 else 0.0 for i in range(len(completions))]

    reward = user_reward(RewardFunction("some_inf", "rf/rewards.py:some_inf", some_inf, 1.0), recorder=None)
    with pytest.raises(UserError, match=r"^training.reward_funcs rf/rewards.py:some_inf: value 0 is inf"):
        reward(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[1], [2]], trainer_state=None)


def test_compile_with_a_quantized_base_is_refused(tmp_path, tiny_argv, capsys):
    """transformers never compiles a bitsandbytes model: `generation.compile=true` could not be honoured."""
    data = _prompts(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(4)])
    assert main(_argv(tiny_argv, tmp_path, data, "quantization=4bit", "generation.compile=true")) == 2
    line = _one_error_line(capsys)
    assert "generation.compile=true with quantization=4bit: transformers does not compile" in line
    assert not (tmp_path / "out").exists()


def test_compile_is_off_on_a_quantized_base_and_sizes_one_static_cache(tmp_path, tiny_argv, monkeypatch):
    """On CUDA, compile (null) is on, with one static cache for every prompt; a quantized base decodes
    with the default cache (a static one is only slower when nothing compiles)."""
    data = _prompts(tmp_path / "p.jsonl", [{"prompt": "p"}])

    def args(*overrides):
        argv = _argv(tiny_argv, tmp_path, data, *overrides)
        return grpo_generation_args(
            load_preset(argv[0], [argv[i + 1] for i, flag in enumerate(argv) if flag == "--set"])
        )

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    compiled = args("data.max_prompt_length=100", "training.grpo.max_completion_length=20")
    assert compiled["cache_implementation"] == "static" and compiled["generation_kwargs"] == {"max_cache_len": 120}
    assert args("quantization=4bit")["cache_implementation"] is None
    assert args("generation.compile=false")["cache_implementation"] is None
