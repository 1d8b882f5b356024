"""PPO's logprobs use the model's own logits, head transforms included.

Computing logits as backbone + `lm_head` dropped what some architectures do after the head:
Gemma 2/3 `final_logit_softcapping`, Cohere `logit_scale`, Granite `logits_scaling`. Then logprobs,
KL and entropy belonged to another distribution than the one `generate` samples from. Tiny random
models of those families, built from their configs (no hub), must give `model(...).logits`.
"""

from __future__ import annotations

import pytest
import torch

from eulerforge_trl.models.backbone import final_hidden, last_logits, position_ids_from_mask
from eulerforge_trl.trainers.ppo.rollout import response_forward

SMALL = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=64,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(**SMALL, final_logit_softcapping=0.5, attn_implementation="eager"))


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, final_logit_softcapping=0.5, attn_implementation="eager"))


def _cohere():
    from transformers import CohereConfig, CohereForCausalLM

    return CohereForCausalLM(CohereConfig(**SMALL, logit_scale=4.0))


def _granite():
    from transformers import GraniteConfig, GraniteForCausalLM

    return GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=0.25))


def _llama():  # no transform after the head: the plain case still agrees
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**SMALL))


FAMILIES = {"gemma2": _gemma2, "gemma3_text": _gemma3, "cohere": _cohere, "granite": _granite, "llama": _llama}


def _batch():
    ids = torch.randint(3, 64, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left-padded prompts
    mask[1, :1] = 0
    mask[2, -2:] = 0  # a response that ended early
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("family", FAMILIES)
def test_response_logprobs_are_the_models_own(family):
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    ids, mask = _batch()
    n_prompt, temperature = 5, 0.7
    with torch.no_grad():
        forward = response_forward(model, ids, mask, n_prompt, temperature, with_entropy=True)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        expected = torch.log_softmax(logits[:, n_prompt - 1 : -1].float() / temperature, dim=-1)
        expected = expected.gather(-1, ids[:, n_prompt:, None]).squeeze(-1)
        plain = model.get_output_embeddings()(final_hidden(model, ids, mask))[:, n_prompt - 1 : -1]
    torch.testing.assert_close(forward.logprobs, expected, rtol=1e-5, atol=1e-5)
    if family != "llama":  # the transform matters at these settings: the old computation was wrong
        assert not torch.allclose(plain, logits[:, n_prompt - 1 : -1], atol=1e-3)


@pytest.mark.parametrize("family", ["gemma2", "cohere"])
def test_values_read_the_same_hidden_states_as_before(family):
    """The value head reads the final hidden states the LM head saw, the RM's `final_hidden`."""
    torch.manual_seed(0)
    model = FAMILIES[family]().eval()
    ids, mask = _batch()
    head = torch.nn.Linear(32, 1)
    with torch.no_grad():
        forward = response_forward(model, ids, mask, 5, 1.0, value_head=head)
        logits, hidden = last_logits(model, ids, mask, 4)
        expected = final_hidden(model, ids, mask)
    assert logits.shape == (3, 4, 64)
    torch.testing.assert_close(hidden, expected[:, -4:])
    torch.testing.assert_close(forward.values, head(expected[:, 4:-1]))


def test_through_a_peft_adapter():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(_gemma2(), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    ids, mask = _batch()
    with torch.no_grad():
        forward = response_forward(model, ids, mask, 5, 1.0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    expected = torch.log_softmax(logits[:, 4:-1].float(), dim=-1).gather(-1, ids[:, 5:, None]).squeeze(-1)
    torch.testing.assert_close(forward.logprobs, expected, rtol=1e-5, atol=1e-5)
