"""RewardScorer: the RM adapter + RewardHead scoring token sequences, beside the policy or on its own.

`RewardScorer.attach` loads an rm stage's `final/` next to the policy's adapter on the same base
(what PPO does); `load_reward_model` loads it standalone on its own base (notebooks, evaluation)
and `score` scores text pairs with it, rendered as the RM was trained.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import ModelError
from .backbone import final_hidden, gather_last_hidden
from .fingerprint import base_identity, check_same_base
from .reward_files import load_reward_head, read_reward_meta
from .reward_head import RewardHead

logger = logging.getLogger(__name__)

# the name of the RM's adapter when it sits on a shared base beside other adapters (PPO, GRPO, evaluate)
REWARD_ADAPTER = "reward"


class RewardScorer:
    """Scores token sequences with the RM adapter + RewardHead on an already-loaded peft model.

    Example:
        >>> policy = get_peft_model(base, lora, adapter_name="policy")
        >>> scorer = RewardScorer.attach(policy, "outputs/rm/final", model_name="outputs/sft/final")
        >>> scores = scorer.score_ids(input_ids, attention_mask)   # [B]
    """

    def __init__(self, model, head: RewardHead, adapter_name: str | None):
        self.model, self.head, self.adapter_name = model, head, adapter_name

    @classmethod
    def attach(
        cls,
        model,
        checkpoint: str,
        model_name: str,
        adapter_name: str = REWARD_ADAPTER,
        key: str = "training.reward_model.checkpoint_path",
    ) -> RewardScorer:
        """Load the RM adapter under `adapter_name` and its head; "" gives a random head (debug only).

        The RM must fit the model's base (`fingerprint.check_same_base`); errors name it by `key`.
        """
        hidden = model.get_input_embeddings().weight.shape[1]
        device = model.get_input_embeddings().weight.device
        if not checkpoint:
            logger.warning(
                "!!! training.reward_model.checkpoint_path is empty: scoring with a RANDOM RewardHead on the "
                "policy's base. Rewards are meaningless; use this for debugging only. !!!"
            )
            return cls(model, RewardHead(hidden).to(device), adapter_name=None)
        meta = read_reward_meta(checkpoint, key)
        check_same_base(meta, base_identity(_unwrapped(model), model_name), checkpoint, key)
        head = load_reward_head(checkpoint)
        if head.linear.in_features != hidden:
            raise ModelError(
                f"{key} {checkpoint}: reward head expects hidden size "
                f"{head.linear.in_features}, the policy's base has {hidden}"
            )
        model.load_adapter(checkpoint, adapter_name=adapter_name, is_trainable=False)
        return cls(model, head.to(device), adapter_name)

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] ids and mask (any padding side) -> [B] float scores; restores adapter and mode."""
        was_training = self.model.training
        previous = getattr(self.model, "active_adapter", None)
        self.model.eval()
        try:
            if self.adapter_name is None:
                hidden = final_hidden(self.model, input_ids, attention_mask)
            else:
                self.model.set_adapter(self.adapter_name, inference_mode=True)
                hidden = final_hidden(self.model, input_ids, attention_mask)
        finally:
            if self.adapter_name is not None and previous is not None:
                self.model.set_adapter(previous)
            self.model.train(was_training)
        last = gather_last_hidden(hidden, attention_mask)
        return self.head(last.to(self.head.linear.weight.dtype)).float()


def _unwrapped(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_reward_model(checkpoint: str, dtype=None):
    """Load an RM checkpoint standalone (its base + adapter) and return (scorer, tokenizer)."""
    from peft import PeftModel

    from .loading import load_causal_lm, load_tokenizer

    meta = read_reward_meta(checkpoint)
    tokenizer = (
        load_tokenizer(checkpoint)
        if (Path(checkpoint) / "tokenizer_config.json").is_file()
        else load_tokenizer(meta["base_model"])
    )
    base = load_causal_lm(meta["base_model"], dtype=dtype, tokenizer=tokenizer)
    model = PeftModel.from_pretrained(base, checkpoint, adapter_name=REWARD_ADAPTER, is_trainable=False)
    return RewardScorer(model, load_reward_head(checkpoint), REWARD_ADAPTER), tokenizer


def score(scorer: RewardScorer, tokenizer, prompts: list, responses: list, batch_size: int = 16) -> list[float]:
    """Score (prompt, response) pairs as the RM was trained and as PPO scores: rendered by `reward_ids`.

    Prompts and responses are plain text or message lists (a plain-text response to a
    conversational prompt is taken as the assistant's answer).

    Example:
        >>> scorer, tok = load_reward_model("outputs/rm/final")
        >>> score(scorer, tok, ["Describe the cat.\\nAnswer:"], [" The cat is happy."])  # one float per pair
    """
    return score_pairs(scorer, tokenizer, prompts, responses, batch_size).tolist()


def score_pairs(
    scorer: RewardScorer, tokenizer, prompts: list, responses: list, batch_size: int, finished: list[bool] | None = None
) -> torch.Tensor:
    """`score` as a [B] float tensor on the scorer's device, `batch_size` pairs per forward pass: the one
    batched RM scoring loop (evaluation, PPO's and GRPO's reward sources). `finished`: per pair, False
    where the response was cut at the length limit (rendered as cut, see `reward_ids`); None = all finished."""
    from ..data.render import reward_batch

    device = scorer.head.linear.weight.device
    finished = finished if finished is not None else [True] * len(prompts)
    out = [torch.zeros(0, device=device)]
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        ids, mask = reward_batch(tokenizer, prompts[start:end], responses[start:end], device, finished[start:end])
        out.append(scorer.score_ids(ids, mask))
    return torch.cat(out)
