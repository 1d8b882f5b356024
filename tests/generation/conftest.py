"""A tiny random Llama for the vllm engine tests: vLLM's CPU build runs Llama-family models (its
Qwen3.5 imports torchvision, which does not load beside the CPU torch), with head_dim 64 (16 is not
among its CPU attention kernels' sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_llama(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A random tiny Llama with the built-in tiny tokenizer, saved as a model directory."""
    from eulerforge_trl.models.loading import load_tokenizer

    root = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = load_tokenizer("tiny-qwen3.5")
    tiny_llama(tokenizer).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_llama_sft_final(tmp_path_factory, tiny_argv, tiny_llama_dir) -> Path:
    """The tiny Llama after the tiny SFT stage (full fine-tuning): it writes the example template."""
    from eulerforge_trl.train import main

    out = tmp_path_factory.mktemp("tiny_llama_sft")
    argv = tiny_argv("tiny_sft.yml", out, f"model_name={tiny_llama_dir}", "training.max_steps=150")
    assert main(argv) == 0
    return out / "final"
