"""The shipped Qwen3.5-0.8B presets, SFT -> RM -> PPO, on a checkpoint laid out like the hub's.

`Qwen/Qwen3.5-0.8B-Base` is a composite `qwen3_5` checkpoint (`Qwen3_5ForConditionalGeneration`:
a `text_config` and a `vision_config`) whose base tokenizer pads with its EOS. The fixture writes a
scaled-down random one the same way (text part the size of the built-in tiny model, a one-block
vision tower), with the tiny byte-level tokenizer set to pad == EOS and given a ChatML template.
The presets then run a few steps each on the conversational example data, the pad token left as
the checkpoint ships it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

# Qwen's ChatML shape; <|im_start|>/<|im_end|> are not in the tiny vocabulary, byte-level BPE spells them out.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PPO_STEPS = 2
# The presets' own settings, cut down to a few seconds per stage on a CPU. With the template spelled
# out byte by byte, the chat examples render to at most ~250 tokens (prompts ~90): nothing is cut.
FAST = ["data.max_length=256", "training.batch_size=2", "training.grad_accum=1"]


@pytest.fixture(scope="module")
def hub_layout_checkpoint(tmp_path_factory) -> Path:
    """A random `Qwen3_5ForConditionalGeneration` saved as the hub ships it, tokenizer pad == EOS."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3_5VisionConfig,
    )

    from eulerforge_trl.models.tiny import load_tiny_tokenizer, tiny_config

    out = tmp_path_factory.mktemp("qwen35_hub_layout")
    tokenizer = load_tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as the real base tokenizer: pad == EOS, nothing added
    tokenizer.chat_template = CHAT_TEMPLATE
    text = tiny_config(len(tokenizer))  # the built-in tiny model's text part: DeltaNet and attention alternate
    text.pad_token_id = tokenizer.pad_token_id
    vision = Qwen3_5VisionConfig(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=text.hidden_size,
        num_position_embeddings=16,
    )
    config = Qwen3_5Config(text_config=text.to_dict(), vision_config=vision.to_dict(), tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen3_5ForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "qwen3_5" and "vision_config" in saved and "text_config" in saved
    return out


@pytest.fixture(scope="module")
def chat_data(example_data) -> Path:
    return example_data / "chat"


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_argv, hub_layout_checkpoint, chat_data) -> Path:
    out = tmp_path_factory.mktemp("qwen35_sft")
    argv = tiny_argv(
        "qwen3.5_0.8b_dense_lora_sft.yml",
        out,
        f"model_name={hub_layout_checkpoint}",
        f"data.path={chat_data / 'sft.jsonl'}",
        "training.max_steps=3",
        "training.save_steps=3",
        *FAST,
    )
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory, tiny_argv, sft_run, chat_data) -> Path:
    out = tmp_path_factory.mktemp("qwen35_rm")
    argv = tiny_argv(
        "qwen3.5_0.8b_dense_lora_rm.yml",
        out,
        f"model_name={sft_run / 'final'}",
        f"data.path={chat_data / 'preference.jsonl'}",
        "training.max_steps=3",
        "training.save_steps=3",
        *FAST,
    )
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory, tiny_argv, sft_run, rm_run, chat_data) -> Path:
    out = tmp_path_factory.mktemp("qwen35_ppo")
    argv = tiny_argv(
        "qwen3.5_0.8b_dense_lora_ppo.yml",
        out,
        f"model_name={sft_run / 'final'}",
        f"training.reward_model.model_name={sft_run / 'final'}",
        f"training.reward_model.checkpoint_path={rm_run / 'final'}",
        f"data.path={chat_data / 'prompts.jsonl'}",
        f"training.max_steps={PPO_STEPS}",
        f"training.save_steps={PPO_STEPS}",
        "training.batch_size=4",
        "training.ppo.epochs=1",
        "training.ppo.num_mini_batches=1",
        "training.ppo.max_gen_len=8",
        "training.ppo.sample_every=0",
        "data.max_prompt_length=96",
    )
    assert main(argv) == 0
    return out


def test_the_loader_reads_the_text_weights_of_the_composite_checkpoint(hub_layout_checkpoint):
    """`Qwen3_5ForCausalLM` from the `model.language_model.*` keys: the same weights, not a fresh init."""
    from transformers import Qwen3_5ForConditionalGeneration

    full = Qwen3_5ForConditionalGeneration.from_pretrained(hub_layout_checkpoint).model.language_model.state_dict()
    text = load_causal_lm(str(hub_layout_checkpoint)).model.state_dict()
    assert text.keys() == full.keys()
    assert all(torch.equal(text[k], full[k]) for k in full)


def test_sft_on_the_composite_checkpoint_writes_a_text_model_and_keeps_pad_equal_to_eos(sft_run):
    final = sft_run / "final"
    model_type = json.loads((final / "config.json").read_text())["model_type"]
    assert model_type.startswith("qwen3_5") and "text" in model_type, model_type
    tokenizer = load_tokenizer(str(final))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert len(tokenizer) == load_causal_lm(str(final)).get_input_embeddings().weight.shape[0]


def test_rm_on_the_sft_model_saves_its_head_and_a_final_eval(rm_run):
    assert (rm_run / "final" / "reward_head.pt").is_file()
    history = read_metrics(rm_run / "metrics.jsonl")
    assert history and history[-1].get("final_eval"), history[-1:]


def test_ppo_on_the_sft_model_and_rm_logs_each_step_starting_at_zero_kl(ppo_run):
    history = [r for r in read_metrics(ppo_run / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in history] == list(range(1, PPO_STEPS + 1))
    assert history[0]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
