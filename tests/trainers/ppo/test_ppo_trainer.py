"""PPO mechanics on the built-in tiny model with a random reward head (fast, no SFT/RM needed).

The learning test (reward rises after SFT -> RM -> PPO) lives in tests/stages/test_ppo.py.
"""

import json

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.rundir import RunDir
from eulerforge_trl.trainers.ppo.rollout import mask_after_first_eos, response_forward
from eulerforge_trl.trainers.ppo.trainer import PPOTrainer


def tiny_ppo_preset(tmp_path, *overrides):
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
            *overrides,
        ],
        output_dir=str(tmp_path / "out"),
    )


@pytest.fixture
def trainer(tmp_path):
    # two minibatches: the old logprobs come from their own pass in collect() (not fused into the update)
    preset = tiny_ppo_preset(tmp_path, "training.lr=0", "training.ppo.num_mini_batches=2")
    RunDir(tmp_path / "out").root.mkdir(parents=True)
    torch.manual_seed(0)
    return PPOTrainer(preset, RunDir(tmp_path / "out"))


def test_mask_after_first_eos_keeps_the_eos_and_drops_the_rest():
    eos = 9
    response = torch.tensor([[5, 9, 7, 9], [5, 6, 7, 8], [9, 1, 1, 1]])
    mask, has_eos = mask_after_first_eos(response, eos)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]
    assert has_eos.tolist() == [True, False, True]


def test_random_reward_head_warns_loudly(tmp_path, caplog):
    preset = tiny_ppo_preset(tmp_path)
    with caplog.at_level("WARNING"):
        PPOTrainer(preset, RunDir(tmp_path / "out"))
    assert "RANDOM RewardHead" in caplog.text


def test_recomputed_logprobs_equal_the_rollout_logprobs_and_kl_starts_at_zero(trainer):
    """Old logprobs come from the same code path as the update: recomputation is bit-identical.

    A fresh LoRA adapter (B = 0) leaves the policy equal to the reference: KL is exactly 0.
    """
    ids, mask, rows = trainer.prompt_batch(0)
    from eulerforge_trl.trainers.ppo.trainer import StepTimes

    roll = trainer.collect(ids, mask, rows, StepTimes())
    again, _, _ = response_forward(
        trainer.model, roll.input_ids, roll.attention_mask, roll.n_prompt, trainer.cfg.temperature
    )
    again = again.masked_fill(~roll.response_mask, 0.0)
    assert torch.equal(again, roll.logprobs)
    assert torch.equal(roll.logprobs, roll.ref_logprobs)
    assert roll.kl.abs().max().item() == 0.0


def test_logprobs_match_sampling_time_logits(trainer):
    """The temperature-scaled logprobs of a full forward equal those `generate` sampled from."""
    trainer.cfg.temperature = 0.7
    ids, mask, _ = trainer.prompt_batch(0)
    trainer.model.eval()
    out = trainer.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=6,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=0.7,
        output_logits=True,
        return_dict_in_generate=True,
        eos_token_id=trainer.tokenizer.eos_token_id,
        pad_token_id=trainer.tokenizer.pad_token_id,
    )
    response = out.sequences[:, ids.shape[1] :]
    sampled = torch.stack(out.logits, dim=1).float() / 0.7
    sampled = torch.log_softmax(sampled, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    response_mask, _ = mask_after_first_eos(response, trainer.tokenizer.eos_token_id)
    full_mask = torch.cat([mask, response_mask.long()], dim=1)
    recomputed, _, _ = response_forward(trainer.model, out.sequences, full_mask, ids.shape[1], 0.7)
    assert torch.allclose(recomputed[response_mask], sampled[response_mask], atol=1e-4)


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_lr_zero_keeps_ratio_one_and_nothing_clipped(tmp_path, critic):
    preset = tiny_ppo_preset(tmp_path, "training.lr=0", f"training.ppo.critic={critic}")
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    metrics = trainer.train_step()
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["clipfrac"] == 0.0
    assert metrics["approx_kl"] == pytest.approx(0.0, abs=1e-10)
    for name, param in trainer.model.named_parameters():
        if name in before:
            assert torch.equal(param, before[name]), name
    # value_head + 1 minibatch takes pi_old from the first update pass: it must equal a separate pass
    roll = trainer._last_rollout
    assert trainer.fuses_old_pass() == (critic == "value_head")
    with torch.no_grad():
        again, values, _ = response_forward(
            trainer.model,
            roll.input_ids,
            roll.attention_mask,
            roll.n_prompt,
            trainer.cfg.temperature,
            value_head=trainer.value_head if critic == "value_head" else None,
        )
    torch.testing.assert_close(again.masked_fill(~roll.response_mask, 0.0), roll.logprobs, atol=1e-5, rtol=0)
    if critic == "value_head":
        torch.testing.assert_close(values, roll.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_a_step_with_lr_changes_only_the_trainable_adapters(tmp_path, critic):
    preset = tiny_ppo_preset(tmp_path, "training.lr=1e-2", f"training.ppo.critic={critic}")
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    snapshot = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    head_before = trainer.value_head.linear.weight.detach().clone()
    trainer.train_step()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert any(".default." in n for n in changed), "policy adapter did not move"
    assert not any("lora_" not in n for n in changed), "base weights must stay frozen"
    assert not any(".reward." in n for n in changed), "the RM adapter must stay frozen"
    if critic == "adapter":
        assert any(".critic." in n for n in changed)
    assert not torch.equal(trainer.value_head.linear.weight, head_before)


def test_sampling_ignores_the_checkpoints_generation_settings(tmp_path, tiny_sft_final):
    """A checkpoint's generation_config (repetition_penalty, top_k, ...) would make samples not come
    from pi_old; PPO samples with nothing but what it asks for."""
    import shutil

    model_dir = tmp_path / "sft"
    shutil.copytree(tiny_sft_final, model_dir)
    path = model_dir / "generation_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    settings.update(repetition_penalty=1.3, top_k=5, no_repeat_ngram_size=2, temperature=0.3)
    path.write_text(json.dumps(settings))
    trainer = PPOTrainer(tiny_ppo_preset(tmp_path, f"model_name={model_dir}"), RunDir(tmp_path / "out"))
    used = trainer.model.generation_config
    assert used.repetition_penalty in (None, 1.0) and used.top_k in (None, 0, 50)
    assert used.no_repeat_ngram_size in (None, 0) and used.temperature in (None, 1.0)
    assert used.eos_token_id == trainer.tokenizer.eos_token_id


def test_every_dropout_is_off_once_the_rm_and_critic_adapters_are_loaded(tmp_path, tiny_sft_final, tiny_rm_final):
    """RM presets train with LoRA dropout; adapters loaded from them must not bring it into PPO."""
    import shutil

    rm = tmp_path / "rm"
    shutil.copytree(tiny_rm_final, rm)
    config = json.loads((rm / "adapter_config.json").read_text())
    config["lora_dropout"] = 0.05
    (rm / "adapter_config.json").write_text(json.dumps(config))
    preset = tiny_ppo_preset(
        tmp_path,
        f"model_name={tiny_sft_final}",
        f"training.reward_model.checkpoint_path={rm}",
        "training.ppo.critic=adapter",
    )
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    rates = {name: m.p for name, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert any(".critic" in name for name in rates), "the critic adapter should carry LoRA dropout modules"
    assert all(p == 0.0 for p in rates.values()), {n: p for n, p in rates.items() if p}
