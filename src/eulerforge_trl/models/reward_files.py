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


def save_reward_model(directory: Path, peft_model, identity: dict) -> None:
    """Write an rm stage's files into `directory`: the LoRA adapter, the head once (`HEAD_FILE`) and
    the base's identity (`META_FILE`).

    peft trains the classifier's `score` layer as a module to save, so that the trainer's checkpoints
    hold it and a resumed run gets it back. Every reader of a `final/` takes the head from `HEAD_FILE`
    (PPO puts the adapter on a causal LM, which has no `score`), so the adapter is written without
    it: `peft_model`'s `score` is unwrapped, and the model is not trained further.
    """
    adapter = peft_model.active_adapter
    classifier = peft_model.get_base_model()
    score = classifier.score
    if hasattr(score, "modules_to_save"):
        score = classifier.score = score.modules_to_save[adapter]
    config = peft_model.peft_config[adapter]
    config.modules_to_save = config.task_type = None  # a LoRA of the decoder stack, on a classifier or a causal LM
    peft_model.save_pretrained(directory)
    torch.save(RewardHead.from_linear(score).float().state_dict(), Path(directory) / HEAD_FILE)
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
