"""RewardHead: a scalar head read at the last real token, on the policy's own base model.

The RM stage trains a LoRA adapter + head; PPO (or a notebook) loads that adapter beside the
policy's adapter on the *same* base and scores with it — no second model in memory. Where the
score is read is decided by one function, `last_token_index`, for RM evaluation and PPO alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError

logger = logging.getLogger(__name__)

HEAD_FILE = "reward_head.pt"
META_FILE = "reward_meta.json"


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


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token of each row ([B, T] mask -> [B]); left or right padding.

    Rewards are read there: with EOS appended (RM data) or generated (PPO), it is the EOS token.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def gather_last_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] hidden states -> [B, H] at `last_token_index`."""
    index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over real tokens only, so a left-padded row sees the positions a right-padded one does."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def backbone_of(model) -> nn.Module:
    """The decoder stack (no LM head) of a causal LM, through a peft wrapper if there is one.

    Calling it instead of the full model skips the vocabulary projection, the largest matmul.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, inner.base_model_prefix, None)
    if backbone is None:
        raise ModelError(f"cannot find the decoder stack of {type(inner).__name__}")
    return backbone


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T, H] final (normed) hidden states of the backbone with whatever adapter is active."""
    out = backbone_of(model)(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state


# ---------------------------------------------------------------------------------- base identity


def base_identity(model, model_name: str) -> dict:
    """What identifies the base an adapter was trained on: architecture sizes and a weight fingerprint."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    embed = model.get_input_embeddings().weight.detach()
    sample = embed[:: max(1, embed.shape[0] // 256)].float().cpu().contiguous()
    return {
        "base_model": model_name,
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "vocab_size": embed.shape[0],
        "num_hidden_layers": config.num_hidden_layers,
        "fingerprint": hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16],
    }


def check_same_shapes(rm_meta: dict, policy: dict, rm_path: str) -> None:
    """Hard error when the RM's base and the policy's differ in shape: its adapter and head cannot apply."""
    for key in ("hidden_size", "vocab_size", "num_hidden_layers"):
        if rm_meta.get(key) != policy.get(key):
            raise ModelError(
                f"training.reward_model.checkpoint_path {rm_path}: the RM was trained on base "
                f"{rm_meta.get('base_model')} ({key}={rm_meta.get(key)}) but the policy's base "
                f"{policy['base_model']} has {key}={policy.get(key)}; train the RM on the policy's base "
                f"(--set model_name=<sft>/final in the rm stage)"
            )


def check_same_base(rm_meta: dict, policy: dict, rm_path: str) -> None:
    """Shapes must match (error); different weights of the same shapes only warn (fingerprint)."""
    check_same_shapes(rm_meta, policy, rm_path)
    if rm_meta.get("fingerprint") != policy.get("fingerprint"):
        logger.warning(
            "reward model %s was trained on base %s, whose weights differ from the policy's base %s "
            "(fingerprints %s vs %s): scores may be off",
            rm_path,
            rm_meta.get("base_model"),
            policy["base_model"],
            rm_meta.get("fingerprint"),
            policy.get("fingerprint"),
        )


def save_reward_files(directory: Path, head: RewardHead, identity: dict) -> None:
    torch.save(head.state_dict(), Path(directory) / HEAD_FILE)
    (Path(directory) / META_FILE).write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def read_reward_meta(checkpoint: str) -> dict:
    path = Path(checkpoint)
    if not (path / HEAD_FILE).is_file() or not (path / META_FILE).is_file():
        raise ModelError(
            f"training.reward_model.checkpoint_path {checkpoint}: not an RM checkpoint "
            f"(expected {HEAD_FILE} and {META_FILE}; point it at the rm stage's final/)"
        )
    return json.loads((path / META_FILE).read_text())


# ------------------------------------------------------------------------------------- the scorer


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
    def attach(cls, model, checkpoint: str, model_name: str, adapter_name: str = "reward") -> RewardScorer:
        """Load the RM adapter under `adapter_name` and its head; "" gives a random head (debug only)."""
        hidden = model.get_input_embeddings().weight.shape[1]
        device = model.get_input_embeddings().weight.device
        if not checkpoint:
            logger.warning(
                "!!! training.reward_model.checkpoint_path is empty: scoring with a RANDOM RewardHead on the "
                "policy's base. Rewards are meaningless; use this for debugging only. !!!"
            )
            return cls(model, RewardHead(hidden).to(device), adapter_name=None)
        meta = read_reward_meta(checkpoint)
        check_same_base(meta, base_identity(_unwrapped(model), model_name), checkpoint)
        head = RewardHead(hidden)
        state = torch.load(Path(checkpoint) / HEAD_FILE, map_location="cpu", weights_only=True)
        if state["linear.weight"].shape != head.linear.weight.shape:
            raise ModelError(
                f"training.reward_model.checkpoint_path {checkpoint}: reward head expects hidden size "
                f"{state['linear.weight'].shape[1]}, the policy's base has {hidden}"
            )
        head = RewardHead(hidden, bias="linear.bias" in state)
        head.load_state_dict(state)
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
    model = PeftModel.from_pretrained(base, checkpoint, adapter_name="reward", is_trainable=False)
    head_state = torch.load(Path(checkpoint) / HEAD_FILE, map_location="cpu", weights_only=True)
    head = RewardHead(meta["hidden_size"], bias="linear.bias" in head_state)
    head.load_state_dict(head_state)
    return RewardScorer(model, head, "reward"), tokenizer


def score(scorer: RewardScorer, tokenizer, prompts: list, responses: list, batch_size: int = 16) -> list[float]:
    """Score (prompt, response) pairs as the RM was trained and as PPO scores: rendered by `reward_ids`.

    Prompts and responses are plain text or message lists (a plain-text response to a
    conversational prompt is taken as the assistant's answer).

    Example:
        >>> scorer, tok = load_reward_model("outputs/rm/final")
        >>> score(scorer, tok, ["Describe the cat.\\nAnswer:"], [" The cat is happy."])  # one float per pair
    """
    from ..data.render import reward_batch

    device = scorer.head.linear.weight.device
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        ids, mask = reward_batch(tokenizer, prompts[start:end], responses[start:end], device)
        out += scorer.score_ids(ids, mask).tolist()
    return out
