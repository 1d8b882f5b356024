"""What identifies the base an adapter was trained on, and the checks that an RM fits a policy's base.

An RM adapter + head applies only to a base of the same shapes (hard error); the same shapes with
other weights (a fingerprint of the embeddings) only warn, since scores may then be off. This one
rule holds wherever an RM scores a model: PPO, GRPO and `eulerforge evaluate --reward`.
"""

from __future__ import annotations

import hashlib
import logging

from ..errors import ModelError

logger = logging.getLogger(__name__)


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


def check_same_shapes(
    rm_meta: dict, policy: dict, rm_path: str, where: str = "training.reward_model.checkpoint_path"
) -> None:
    """Hard error when the RM's base and the policy's differ in shape: its adapter and head cannot apply.
    `where` names the RM in the message: the preset key, or evaluate's --reward."""
    for key in ("hidden_size", "vocab_size", "num_hidden_layers"):
        if rm_meta.get(key) != policy.get(key):
            raise ModelError(
                f"{where} {rm_path}: the RM was trained on base "
                f"{rm_meta.get('base_model')} ({key}={rm_meta.get(key)}) but the policy's base "
                f"{policy['base_model']} has {key}={policy.get(key)}; train the RM on the policy's base "
                f"(--set model_name=<sft>/final in the rm stage)"
            )


def check_same_base(
    rm_meta: dict, policy: dict, rm_path: str, where: str = "training.reward_model.checkpoint_path"
) -> None:
    """Shapes must match (error); different weights of the same shapes only warn (fingerprint).

    A warning, not an error: the fingerprint hashes a sample of embedding rows, a heuristic, and an RM
    of the same shapes applies (one trained on the base scoring a model tuned from it, say).
    """
    check_same_shapes(rm_meta, policy, rm_path, where)
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
