"""The RM checkpoint's own files beside its LoRA adapter: the head's weights and the base's identity.

An rm stage `final/` = adapter files + `HEAD_FILE` (RewardHead state dict) + `META_FILE`
(`fingerprint.base_identity` of the base it was trained on, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelError
from .reward_head import RewardHead

HEAD_FILE = "reward_head.pt"
META_FILE = "reward_meta.json"


def is_reward_dir(path: str | Path) -> bool:
    """Whether `path` is an rm stage's `final/` (its head or its base's identity beside the adapter)."""
    return (Path(path) / HEAD_FILE).is_file() or (Path(path) / META_FILE).is_file()


def save_reward_files(directory: Path, head: RewardHead, identity: dict) -> None:
    torch.save(head.state_dict(), Path(directory) / HEAD_FILE)
    (Path(directory) / META_FILE).write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")


def read_reward_meta(checkpoint: str, key: str = "training.reward_model.checkpoint_path") -> dict:
    """The `META_FILE` of an rm stage's `final/`: the one check that a directory is an RM checkpoint.

    Args:
        checkpoint: the directory.
        key: how errors name it: the preset key (PPO, GRPO) or the flag (`--reward` of evaluate).

    Raises:
        ModelError: no such directory, or one without `HEAD_FILE` and `META_FILE` (an SFT final/, say).
    """
    path = Path(checkpoint)
    if not path.is_dir():
        raise ModelError(f"{key} {checkpoint}: no such directory (give the rm stage's final/)")
    if not (path / HEAD_FILE).is_file() or not (path / META_FILE).is_file():
        raise ModelError(
            f"{key} {checkpoint}: not a reward model (expected {HEAD_FILE} and {META_FILE}; give the rm stage's final/)"
        )
    return json.loads((path / META_FILE).read_text(encoding="utf-8"))


def load_reward_head(checkpoint: str) -> RewardHead:
    """The trained RewardHead of an RM checkpoint (on the CPU, float32 as saved)."""
    state = torch.load(Path(checkpoint) / HEAD_FILE, map_location="cpu", weights_only=True)
    head = RewardHead(state["linear.weight"].shape[1], bias="linear.bias" in state)
    head.load_state_dict(state)
    return head
