"""Whether a `model_name` can be found before anything loads: built-in names, local directories, hub ids.

transformers spends about a minute retrying the hub before it gives up on a hub id it cannot find
(a typo, no network); one request to the hub, or offline a look into the HF cache, answers in a
second. A bare name that is neither a directory nor a hub id gets the closest built-in name.
"""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

from ..config.schema import TINY_MODEL_NAME
from ..errors import ModelError

# what huggingface_hub and transformers read for offline mode (huggingface_hub once, on import)
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def check_model_name(model_name: str, key: str = "model_name") -> None:
    """A quick check that `model_name` can be looked for: built-in, a local model/adapter dir, or a hub id.

    Args:
        key: how messages name the setting (`--models` for `eulerforge evaluate`).

    Raises:
        ModelError: one line: a directory without a model, a name that is neither (with the closest
            built-in name), a hub id that is not in the HF cache while the hub cannot be reached or
            `HF_HUB_OFFLINE` is set, or that the hub does not know.
    """
    from . import builtin

    if model_name == TINY_MODEL_NAME:
        return
    if builtin.is_builtin(model_name):
        builtin.ensure_model(model_name)  # fetched and converted now, before any output is written
        return
    path = Path(model_name)
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise ModelError(f"{key} {model_name}: this directory holds no config.json or adapter_config.json")
    check_locatable(model_name, key)


def check_locatable(model_name: str, key: str = "model_name") -> None:
    """Fail fast on a path that is neither a local directory nor a hub id the cache or the hub has.

    transformers would spend about a minute retrying the hub before it gives up on a name it cannot
    find; asking the hub once (or, offline, the cache only) takes a second.
    """
    if Path(model_name).exists():
        return
    if model_name.count("/") != 1 or model_name.startswith((".", "/", "~")):
        builtins = _builtin_names()
        close = difflib.get_close_matches(model_name, builtins, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f" (built-in names: {', '.join(builtins)})"
        raise ModelError(f"{key} {model_name}: no such directory, and not a hub id of the form owner/name{hint}")
    problem = _hub_problem(model_name)
    if problem:
        raise ModelError(
            f"{key} {model_name}: {problem}; check the name, or give a local model directory "
            f"(built-in names: {', '.join(_builtin_names())})"
        )


def _builtin_names() -> list[str]:
    from .builtin import REGISTRY

    return [TINY_MODEL_NAME, *sorted(REGISTRY)]


def hub_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` (or transformers' `TRANSFORMERS_OFFLINE`) is set, read now from the
    environment (huggingface_hub reads it once, when it is imported)."""
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in _OFFLINE_VARIABLES)


@functools.lru_cache(maxsize=64)
def _hub_problem(repo_id: str) -> str | None:
    """Why the hub model `repo_id` cannot be loaded, or None when it can (or the hub will tell).

    The HF cache answers first: a model it holds loads offline. Otherwise, with `HF_HUB_OFFLINE` set,
    it cannot load; else one request to the hub says whether the model exists (no retries).
    """
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return None
    except ValueError:  # not a valid repo id (two dots, a bad character): the hub would say the same
        return "not a valid hub id"
    if hub_offline():
        return "not in the Hugging Face cache, and HF_HUB_OFFLINE is set (nothing is downloaded)"
    try:
        model_info(repo_id, timeout=10)
    except GatedRepoError:
        return None  # it exists; from_pretrained says how to get access
    except RepositoryNotFoundError:
        return "no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
    except HfHubHTTPError:
        return None  # the hub answered something else: let the loader report it
    except Exception as err:  # noqa: BLE001 - no connection, DNS, proxy, timeout: the hub cannot be reached
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not in the Hugging Face cache, and the Hugging Face Hub cannot be reached ({reason})"
    return None


def not_loadable(model_name: str, err, attn_implementation: str | None = None) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if attn_implementation and attn_implementation in str(err):
        return f"attn_implementation {attn_implementation} (model_name {model_name}): cannot load it ({reason})"
    return f"model_name {model_name}: cannot load it ({reason})"
