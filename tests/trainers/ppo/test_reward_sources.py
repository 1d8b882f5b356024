"""What PPO's reward is made of (`rewards/sources.py`): the RM and/or reward functions, weighted and summed.

Fast checks on the built-in tiny model (no SFT/RM needed). PPO runs through the CLI with functions,
an RM beside them and a separate RM live in tests/stages/test_ppo_rewards.py.
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError, UserError
from eulerforge_trl.rewards.sources import RewardSources, columns_of, load_functions
from eulerforge_trl.rundir import RunDir
from eulerforge_trl.trainers.ppo.trainer import PPOTrainer


def tiny_ppo_preset(tmp_path, *overrides):
    """tests/trainers/ppo/test_ppo_trainer.py's preset: the tiny random model, 2 steps of 4 prompts."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Tell me about the cat number {i}.\nAnswer:"}) + "\n" for i in range(16))
    )
    return load_preset(
        "presets/tiny_ppo.yml",
        [
            "model_name=tiny-qwen3.5",
            "training.reward_model.checkpoint_path=",
            f"data.path={prompts}",
            "training.batch_size=4",
            "training.max_steps=2",
            "training.report_to=[]",
            "training.ppo.max_gen_len=6",
            "training.ppo.epochs=2",
            "training.ppo.num_mini_batches=1",
            "training.ppo.score_norm_samples=8",
            *overrides,
        ],
        output_dir=str(tmp_path / "out"),
    )


RULES = """
def length(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]

def shape(prompts, completions, **kwargs):
    # 1.0 for an assistant message list (a conversation), 0.0 for text
    return [float(isinstance(c, list) and c[0]["role"] == "assistant") for c in completions]

def with_column(prompts, completions, answer):
    return [float(a in c) for c, a in zip(completions, answer)]

def sometimes_none(prompts, completions, **kwargs):
    return [None if i % 2 else 2.0 for i in range(len(completions))]
"""


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(RULES)
    return path


def test_function_names_are_their_names_made_unique(rules, tmp_path):
    other = tmp_path / "other.py"
    other.write_text("def length(prompts, completions):\n    return [0.0] * len(completions)\n")
    rm_named = tmp_path / "rm_named.py"
    rm_named.write_text("def rm(prompts, completions):\n    return [0.0] * len(completions)\n")
    functions = load_functions([f"{rules}:length", f"{other}:length", f"{rm_named}:rm"], [1.0, 0.5, 2.0])
    assert [f.name for f in functions] == ["length", "length_2", "rm_2"]  # "rm" is the RM's
    assert [f.weight for f in functions] == [1.0, 0.5, 2.0]
    assert [f.weight for f in load_functions([f"{rules}:length"], None)] == [1.0]


def test_total_is_the_weighted_sum_and_none_adds_nothing(rules):
    functions = load_functions([f"{rules}:length", f"{rules}:sometimes_none"], [0.5, 3.0])
    total, parts = RewardSources(None, functions, "cpu").score(["p", "q"], ["abcd", "ab"])
    assert list(parts) == ["reward/length", "reward/sometimes_none"]
    assert parts["reward/length"].tolist() == [4.0, 2.0]
    assert parts["reward/sometimes_none"][0] == 2.0 and math.isnan(parts["reward/sometimes_none"][1])
    assert total.tolist() == [0.5 * 4 + 3.0 * 2, 0.5 * 2]  # None -> NaN -> left out (TRL's nansum)
    assert total.dtype == torch.float32


def test_functions_get_message_lists_for_conversations_and_text_otherwise(rules):
    sources = RewardSources(None, load_functions([f"{rules}:shape"], None), "cpu")
    _, chat = sources.score([[{"role": "user", "content": "hi"}]], ["hello"])
    _, text = sources.score(["hi"], ["hello"])
    assert chat["reward/shape"].tolist() == [1.0] and text["reward/shape"].tolist() == [0.0]


def test_columns_reach_the_functions_row_by_row(rules):
    rows = [{"prompt": "a", "columns": {"answer": "x"}}, {"prompt": "b", "columns": {"answer": "y", "more": 1}}]
    assert columns_of(rows) == {"answer": ["x", "y"], "more": [None, 1]}
    sources = RewardSources(None, load_functions([f"{rules}:with_column"], None), "cpu")
    _, parts = sources.score(["a", "b"], ["x!", "x!"], columns_of(rows))
    assert parts["reward/with_column"].tolist() == [1.0, 0.0]


def test_reward_weights_must_match_reward_funcs(tmp_path, rules):
    with pytest.raises(PresetError) as err:
        tiny_ppo_preset(tmp_path, f"training.reward_funcs=[{rules}:length]", "training.reward_weights=[1.0,2.0]")
    assert "training.reward_weights has 2 entries for 1 training.reward_funcs" in str(err.value)


def test_a_separate_rm_may_name_another_base(tmp_path):
    """reward_model.model_name must be the policy's base only when the RM's adapter runs on it."""
    with pytest.raises(PresetError, match="training.reward_model.model_name"):
        tiny_ppo_preset(tmp_path, "training.reward_model.model_name=other-base")
    tiny_ppo_preset(tmp_path, "training.reward_model.model_name=other-base", "training.reward_model.separate=true")


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_functions_without_an_rm_build_no_head_and_start_the_critic_at_zero(tmp_path, rules, caplog, critic):
    preset = tiny_ppo_preset(tmp_path, f"training.reward_funcs=[{rules}:length]", f"training.ppo.critic={critic}")
    with caplog.at_level(logging.WARNING):
        trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    assert "RANDOM RewardHead" not in caplog.text
    assert trainer.rewards.rm is None and trainer.rewards.names == ["reward/length"]
    assert not any(".reward." in name for name, _ in trainer.model.named_parameters()), "no RM adapter"
    head = trainer.critic.head.linear
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    trainer.ensure_score_scale()  # the zero head stays zero in normalised units: V = 0 = the returns' mean
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    if critic == "adapter":  # a fresh adapter: LoRA B starts at zero, so it is the policy's base itself
        lora_b = [p for n, p in trainer.model.named_parameters() if ".critic." in n and "lora_B" in n]
        assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)


def test_the_critic_starts_as_the_weighted_reward_head_shifted_by_the_rm_share(
    tmp_path, rules, tiny_sft_final, tiny_rm_final
):
    """RM (weight 2) + a function: V = (2 * head(h) - mean of the RM's part) / std of the total."""
    preset = tiny_ppo_preset(
        tmp_path,
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={tiny_rm_final}",
        f"training.reward_funcs=[{rules}:length]",
        "training.reward_model.weight=2.0",
        "training.reward_weights=[0.1]",
    )
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    hidden = torch.randn(5, trainer.critic.head.linear.in_features)
    with torch.no_grad():
        raw = 2.0 * trainer.rewards.rm.scorer.head(hidden)
    shares, real = [], trainer.rewards.rm_share

    def spy(parts):
        shares.append(real(parts))
        return shares[-1]

    trainer.rewards.rm_share = spy
    trainer.ensure_score_scale()
    _, std = trainer.scale.stats
    with torch.no_grad():
        expected = (raw - torch.cat(shares).mean()) / std
        torch.testing.assert_close(trainer.critic.head(hidden), expected, atol=1e-5, rtol=1e-5)


def test_a_step_logs_each_source_and_the_weighted_total(tmp_path, rules, tiny_sft_final, tiny_rm_final):
    preset = tiny_ppo_preset(
        tmp_path,
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={tiny_rm_final}",
        f"training.reward_funcs=[{rules}:length]",
        "training.reward_weights=[0.25]",
        "training.reward_model.weight=3.0",
        "training.max_steps=1",
    )
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    metrics = trainer.train_step()
    assert metrics["reward_mean"] == pytest.approx(
        3.0 * metrics["reward/rm"] + 0.25 * metrics["reward/length"], abs=1e-4
    )


def test_a_failing_function_is_one_user_error_naming_it(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def short(prompts, completions):\n    return [1.0]\n")
    preset = tiny_ppo_preset(tmp_path, f"training.reward_funcs=[{bad}:short]")
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    with pytest.raises(UserError) as err:
        trainer.train_step()
    assert str(err.value).startswith(f"training.reward_funcs {bad}:short: returned 1 values for 4 completions")


def test_columns_stay_with_their_rows_through_eval_split(tmp_path):
    """data.eval_split shuffles the rows: each row's columns must travel with it."""
    from eulerforge_trl.data.jsonl import split_rows

    path = tmp_path / "with_columns.jsonl"
    # a raw U+2028 inside a JSON string is one line to read_rows: it must be one row to the columns too
    rows = ({"prompt": f"p{i}", "n": i, "note": "x\u2028y"} for i in range(20))
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    preset = tiny_ppo_preset(tmp_path, f"data.path={path}", "data.eval_split=0.25")
    train, held_out = split_rows(preset.data, seed=3, columns=True)
    assert len(held_out) == 5 and len(train) == 15
    for row in train + held_out:
        assert row["columns"] == {"n": int(row["prompt"][1:]), "note": "x\u2028y"}
    plain, _ = split_rows(preset.data, seed=3)
    assert "columns" not in plain[0]
