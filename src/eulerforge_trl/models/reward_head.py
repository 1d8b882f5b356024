"""RewardHead: a scalar head read at the last real token, on the policy's own base model, and the
sequence classifier that holds it as its `score` layer.

The RM stage trains a LoRA adapter + head; PPO (or a notebook) loads that adapter beside the
policy's adapter on the *same* base and scores with it (`scorer.RewardScorer`) — no second model
in memory. Where the score is read is decided by one function, `backbone.last_token_index`, for
RM evaluation and PPO alike. The classifier (`sequence_classifier_on`) is the RM as TRL's
RewardTrainer trains it and as `eulerforge export` writes it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ModelError
from .backbone import final_hidden, gather_last_hidden


class RewardHead(nn.Module):
    """hidden_size -> 1 linear map; its input is the final hidden state of the last real token."""

    def __init__(self, hidden_size: int, bias: bool = False):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1, bias=bias)
        # std 1/sqrt(d+1) keeps initial scores O(1) ("N implementation details of RLHF", detail 2.3)
        nn.init.normal_(self.linear.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        if bias:
            nn.init.zeros_(self.linear.bias)

    def forward(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> [B] scores."""
        return self.linear(last_hidden).squeeze(-1)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> RewardHead:
        head = cls(linear.in_features, bias=linear.bias is not None)
        head.linear.load_state_dict(linear.state_dict())
        return head


def sequence_classifier_on(causal_lm, model_name: str, head: RewardHead | None = None, where: str | None = None):
    """A num_labels=1 classifier that shares `causal_lm`'s decoder stack (no copy, same names), with
    `head` (default: a fresh RewardHead) as its `score` layer.

    Its score is read at the last token the attention mask marks, the same place PPO reads it
    (`gather_last_hidden`): transformers' classifiers look for the last token that is not the pad
    id, which with pad == EOS skips the EOS itself. Saved, it is transformers' own class (the same
    name and weights).

    Args:
        model_name: the base's name, recorded in the config.
        where: how errors name the model (default `model_name <model_name>`).

    Raises:
        ModelError: transformers has no sequence-classification class for this architecture.
    """
    from transformers import AutoModelForSequenceClassification

    where = where or f"model_name {model_name}"
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 1
    config.architectures = None
    config._name_or_path = model_name
    try:
        with torch.device("meta"):
            auto_class = type(AutoModelForSequenceClassification.from_config(config))
            classifier = _scored_at_last_real_token(auto_class)(config)
    except ValueError as err:
        raise ModelError(
            f"{where}: transformers has no sequence-classification class for {config.model_type} "
            f"({str(err).splitlines()[0]})"
        ) from None
    setattr(classifier, classifier.base_model_prefix, getattr(causal_lm, causal_lm.base_model_prefix))
    head = head or RewardHead(causal_lm.get_input_embeddings().weight.shape[1])
    classifier.score = head.linear.to(device=causal_lm.device, dtype=torch.float32)
    if stray := [name for name, p in [*classifier.named_parameters(), *classifier.named_buffers()] if p.is_meta]:
        raise ModelError(f"{where}: cannot build a classifier of {config.model_type} ({stray[0]} unset)")
    classifier.config.pad_token_id = causal_lm.config.pad_token_id
    # a quantized stack: peft must wrap its bitsandbytes layers with its bnb LoRA layers, which it
    # decides from these attributes that from_pretrained set on the causal LM only
    for name in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized", "quantization_method", "hf_quantizer"):
        if hasattr(causal_lm, name):
            setattr(classifier, name, getattr(causal_lm, name))
    return classifier


def _scored_at_last_real_token(auto_class):
    """`auto_class` with a forward that pools by attention mask (everything else, peft's view included, unchanged)."""
    from transformers.modeling_outputs import SequenceClassifierOutput

    class ScoredAtLastRealToken(auto_class):
        def forward(self, input_ids=None, attention_mask=None, **_ignored):
            hidden = final_hidden(self, input_ids, attention_mask)
            last = gather_last_hidden(hidden, attention_mask)
            return SequenceClassifierOutput(logits=self.score(last.to(self.score.weight.dtype)))

    ScoredAtLastRealToken.__name__ = ScoredAtLastRealToken.__qualname__ = auto_class.__name__
    return ScoredAtLastRealToken
