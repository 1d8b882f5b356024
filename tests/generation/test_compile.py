"""`generation.compile: true` compiles the hf engine's decoding on any device (inductor on this CPU),
and the compiled step samples what the eager one does."""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError
from eulerforge_trl.generation.hf import PROMPT_BUCKET, HFSampler
from eulerforge_trl.models.loading import load_tokenizer

from .conftest import tiny_llama


def one_layer_llama(tokenizer):
    """The tiny random Llama cut to one layer: inductor compiles it in seconds."""
    model = tiny_llama(tokenizer)
    model.model.layers = model.model.layers[:1]
    model.config.num_hidden_layers = 1
    return model.eval()


@pytest.mark.slow  # a compile of the tiny model: make test runs it, make test-fast does not
def test_compile_true_compiles_off_cuda_and_decodes_as_eager():
    """transformers compiles `generate` only on accelerators unless its `CompileConfig` allows every
    device; with it the model's compiled call is built and run (dynamo captures its graph), and the
    greedy tokens equal eager decoding's."""
    from torch._dynamo.utils import counters

    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.padding_side = "left"
    model = one_layer_llama(tokenizer)
    batch = tokenizer.pad(
        {"input_ids": [tokenizer(t)["input_ids"] for t in ["The cat", "Describe the dog near the park"]]},
        return_tensors="pt",
    )
    settings = dict(max_new_tokens=5, temperature=1e-4, stop_ids=[tokenizer.eos_token_id], pad_token_id=0)
    eager = HFSampler(model, compile=False, **settings).sample(batch["input_ids"], batch["attention_mask"])
    assert not hasattr(model, "_compiled_call")
    torch._dynamo.reset()
    counters.clear()
    sampler = HFSampler(model, compile=True, **settings)
    compiled = sampler.sample(batch["input_ids"], batch["attention_mask"])
    assert hasattr(model, "_compiled_call")  # transformers' compiled forward, built by generate
    assert counters["stats"]["unique_graphs"] >= 1  # and run: dynamo captured its graph
    assert torch.equal(compiled.input_ids, eager.input_ids)  # greedy: the same tokens
    assert compiled.n_prompt == eager.n_prompt < PROMPT_BUCKET  # the bucket's padding is removed again


def test_null_compiles_only_with_cuda():
    tokenizer = load_tokenizer("tiny-qwen3.5")
    sampler = HFSampler(
        one_layer_llama(tokenizer), max_new_tokens=2, temperature=1.0, stop_ids=[tokenizer.eos_token_id], pad_token_id=0
    )
    assert sampler.compile is torch.cuda.is_available()


def test_compile_true_on_a_quantized_model_is_refused():
    with pytest.raises(PresetError, match="generation.compile=true with quantization=4bit"):
        load_preset("presets/tiny_ppo.yml", ["generation.compile=true", "quantization=4bit"])
