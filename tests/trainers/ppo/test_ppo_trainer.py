"""PPO mechanics on the built-in tiny model with a random reward head (fast, no SFT/RM needed).

The learning test (reward rises after SFT -> RM -> PPO) lives in tests/stages/test_ppo.py.
"""

import json

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.generation import mask_after_first_eos
from eulerforge_trl.rundir import RunDir, read_metrics
from eulerforge_trl.trainers.ppo.rollout import response_forward
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
            "training.ppo.score_norm_samples=8",
            *overrides,
        ],
        output_dir=str(tmp_path / "out"),
    )


@pytest.fixture
def trainer(tmp_path):
    # two minibatches: the old logprobs come from their own pass in old_pass() (not fused into the update)
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
    trainer.ensure_score_scale()
    roll = trainer.scorer.sample(ids, mask)
    ref_logprobs = trainer.passes.reference_logprobs(roll)
    old = trainer.passes.old(roll)  # two minibatches: a pass of its own, not fused into the update
    scores, _parts = trainer.scorer.score(roll, [trainer.prompt_rows[i] for i in rows], trainer.step)
    targets = trainer.targets(roll, scores, ref_logprobs, old)
    again, _, _ = response_forward(
        trainer.model, roll.input_ids, roll.attention_mask, roll.n_prompt, trainer.cfg.temperature
    )
    again = again.masked_fill(~roll.response_mask, 0.0)
    assert torch.equal(again, targets.logprobs)
    assert torch.equal(targets.logprobs, ref_logprobs.masked_fill(~roll.response_mask, 0.0))
    assert targets.kl.abs().max().item() == 0.0


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
    roll, targets, _, _ = trainer._last
    assert trainer.passes.fuses_old_pass == (critic == "value_head")
    with torch.no_grad():
        again, values, _ = response_forward(
            trainer.model,
            roll.input_ids,
            roll.attention_mask,
            roll.n_prompt,
            trainer.cfg.temperature,
            value_head=trainer.critic.head if critic == "value_head" else None,
        )
    torch.testing.assert_close(again.masked_fill(~roll.response_mask, 0.0), targets.logprobs, atol=1e-5, rtol=0)
    if critic == "value_head":
        torch.testing.assert_close(values, targets.values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_a_step_with_lr_changes_only_the_trainable_adapters(tmp_path, critic):
    preset = tiny_ppo_preset(tmp_path, "training.lr=1e-2", f"training.ppo.critic={critic}")
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    snapshot = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    head_before = trainer.critic.head.linear.weight.detach().clone()
    trainer.train_step()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert any(".default." in n for n in changed), "policy adapter did not move"
    assert not any("lora_" not in n for n in changed), "base weights must stay frozen"
    assert not any(".reward." in n for n in changed), "the RM adapter must stay frozen"
    if critic == "adapter":
        assert any(".critic." in n for n in changed)
    assert not torch.equal(trainer.critic.head.linear.weight, head_before)


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


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_the_critic_starts_as_the_reward_head_in_normalised_units(tmp_path, critic):
    """Returns are in normalised score units: the copied reward head must be too (V = (r - mean) / std)."""
    trainer = PPOTrainer(tiny_ppo_preset(tmp_path, f"training.ppo.critic={critic}"), RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    logged = trainer.ensure_score_scale()
    mean, std = trainer.scale.stats
    assert logged == {"score_norm_mean": mean, "score_norm_std": std, "score_norm_samples": 8}
    hidden = torch.randn(5, trainer.critic.head.linear.in_features)
    with torch.no_grad():
        expected = (trainer.rewards.rm.scorer.head(hidden) - mean) / std
        torch.testing.assert_close(trainer.critic.head(hidden), expected, atol=1e-5, rtol=1e-5)


def test_score_scale_comes_from_score_norm_samples_before_step_1_and_is_checkpointed(tmp_path):
    preset = tiny_ppo_preset(
        tmp_path, "training.ppo.score_norm_samples=12", "training.max_steps=1", "training.ppo.sample_every=0"
    )
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    trainer = PPOTrainer(preset, run)
    trainer.train()
    first = json.loads(run.metrics.read_text().splitlines()[0])
    assert first["step"] == 0 and first["score_norm_samples"] == 12  # 3 batches of 4 before step 1
    state = torch.load(run.checkpoints / "checkpoint-1" / "ppo_state.pt", weights_only=False)
    assert state["score_stats"] == pytest.approx((first["score_norm_mean"], first["score_norm_std"]))
    resumed = PPOTrainer(preset, run)
    resumed.load_checkpoint(run.checkpoints / "checkpoint-1")
    assert resumed.ensure_score_scale() == {} and resumed.scale.stats == state["score_stats"]


@pytest.mark.parametrize("critic", ["value_head", "adapter"])
def test_policy_and_critic_gradients_are_clipped_apart(tmp_path, critic):
    """A critic far from its targets must not shrink the policy's step (one shared clip did: x0.22)."""
    preset = tiny_ppo_preset(
        tmp_path,
        "training.lr=1e-3",
        f"training.ppo.critic={critic}",
        "training.max_grad_norm=0.5",
        "training.ppo.epochs=1",
    )
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    (tmp_path / "out").mkdir(exist_ok=True)
    trainer.ensure_score_scale()
    with torch.no_grad():
        trainer.critic.head.linear.bias.fill_(50.0)  # values ~50 against returns ~1: a huge critic gradient
    at_step = []
    real_step = trainer.optimizer.step

    def spy():
        def norm(params):
            return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))

        at_step.append((norm(trainer.policy_params).item(), norm(trainer.critic_params).item()))
        real_step()

    trainer.optimizer.step = spy
    metrics = trainer.train_step()
    assert metrics["grad_norm_critic"] > 10 * 0.5
    policy_at_step, critic_at_step = at_step[0]
    assert critic_at_step == pytest.approx(0.5, rel=1e-3)
    assert policy_at_step == pytest.approx(min(0.5, metrics["grad_norm_policy"]), rel=1e-3)  # its own norm only


def test_report_to_logs_every_metric_through_accelerate_trackers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    preset = tiny_ppo_preset(tmp_path, "training.report_to=[tensorboard]", "training.max_steps=1")
    run = RunDir(tmp_path / "out")
    run.root.mkdir()
    PPOTrainer(preset, run).train()
    events = sorted(run.tensorboard.rglob("events.out.tfevents.*"), key=lambda p: len(p.parts))[0]
    tags = EventAccumulator(str(events.parent)).Reload().Tags()["scalars"]
    logged = {k for line in run.metrics.read_text().splitlines() for k in json.loads(line) if k != "step"}
    assert {f"train/{k}" for k in logged} <= set(tags)


def test_an_unknown_logger_is_a_preset_error(tmp_path):
    from eulerforge_trl.errors import PresetError

    with pytest.raises(PresetError, match="training.report_to: unknown logger 'nosuch'"):
        PPOTrainer(tiny_ppo_preset(tmp_path, "training.report_to=[nosuch]"), RunDir(tmp_path / "out"))


def test_weight_decay_and_logging_steps_are_honoured_and_grad_accum_refused(tmp_path):
    from eulerforge_trl.errors import PresetError

    preset = tiny_ppo_preset(tmp_path, "training.weight_decay=0.1", "training.max_steps=5", "training.logging_steps=2")
    RunDir(tmp_path / "out").root.mkdir(parents=True)
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.1}  # not torch's default 0.01
    trainer.train()
    logged = [r["step"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "reward_mean" in r]
    assert logged == [1, 2, 4, 5]  # every 2nd step, the first and the last
    with pytest.raises(PresetError, match="training.grad_accum"):
        tiny_ppo_preset(tmp_path, "training.grad_accum=2")


def test_two_trainers_built_in_one_process_start_from_the_same_weights(tmp_path):
    """The new LoRA's and the critic's initial weights come from `training.seed` in `__init__` (as
    transformers' Trainer seeds), not from whatever the global RNG holds: a notebook's second run
    starts where its first, and the CLI's, did."""
    preset = tiny_ppo_preset(tmp_path)
    built = []
    for _ in range(2):
        trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
        built.append([p.detach().clone() for p in trainer.policy_params + trainer.critic_params])
        torch.rand(1000)  # anything else drawing from the global RNG in between
    assert all(torch.equal(a, b) for a, b in zip(*built, strict=True))
    assert any(p.abs().sum() > 0 for p in built[0])  # LoRA's A and the heads are random, not zero
