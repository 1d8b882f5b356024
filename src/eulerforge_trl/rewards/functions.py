"""Python reward functions named on the command line or in a preset, called exactly as TRL calls them.

TRL's GRPOTrainer (1.16, `_calculate_rewards`) calls a reward function with keywords only:

    fn(prompts=..., completions=..., completion_ids=..., **columns,
       trainer_state=..., log_extra=..., log_metric=...) -> list[float | None]

one number per completion. Prompts and completions are strings for plain-text data and message
lists for conversational data (a completion is then `[{"role": "assistant", "content": ...}]`);
`completion_ids` are the sampled token ids of each completion (its stop token included); the other
columns of the data file come one value per completion; `trainer_state` is the trainer's
`TrainerState` (None where no training runs, as in `evaluate --judge`); `log_extra(column, values)`
and `log_metric(name, value)` let a function log. So TRL's own functions (`trl.rewards.
think_format_reward(completions, **kwargs)`, `accuracy_reward(completions, solution, ...)`) and
a user's `fn(prompts, completions, **kwargs)` work alike. `None` (or NaN) means "not applicable to
this completion" (TRL's convention) and becomes NaN, which adds nothing to the total; +-inf, or a
number beyond float32's range, is refused (it would turn the advantages and then the weights NaN).

`load_reward_function` finds one by its spec, `package.module:function` (or the dotted
`package.module.function`, as TRL's docs name `trl.rewards.accuracy_reward`) or
`path/to/file.py:function`; `call_reward_function` calls it and turns whatever goes wrong
(it cannot take those keywords, raises, returns the wrong number of values, something that is
not a number or an infinite one) into a `UserError` naming the spec, so a user's bug is one line,
not our traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import math
import numbers
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError

SPEC_FORMS = "package.module:function or path/to/file.py:function"
# TRL's reward functions that import an optional package only when called: refused at load, before a
# model loads, with the install command, instead of failing at the first step
NEEDS_PACKAGE = {
    "trl.rewards.accuracy_rewards": ("math_verify", "pip install 'eulerforge-trl[math]' (math-verify)"),
}
logger = logging.getLogger(__name__)
_WARNED_ALL_NONE: set[str] = set()  # functions warned about a batch without any number
FLOAT32_MAX = 3.4028234663852886e38  # rewards become float32 tensors, in PPO and in TRL's GRPO


def load_reward_function(spec: str, key: str = "--judge") -> Callable[..., Sequence[float | None]]:
    """The function named by `spec`; `key` (the flag or preset key that gave it) prefixes errors.

    Example:
        >>> fn = load_reward_function("eulerforge_trl.examples.reviews:review_reward")
        >>> fn = load_reward_function("trl.rewards.think_format_reward")
        >>> fn = load_reward_function("my_rules.py:no_repeats", key="training.reward_funcs")

    Raises:
        UserError: a malformed spec, a file or module that is missing or fails to import, no such
            function in it, an optional package it needs (math_verify) not installed.
    """
    text = str(spec).strip()
    target, sep, name = text.rpartition(":")
    if not sep and _is_dotted_name(text):  # trl.rewards.accuracy_reward
        target, sep, name = text.rpartition(".")
    if not sep or not target or not name.isidentifier():
        raise UserError(f"{key} {spec}: expected {SPEC_FORMS}")
    where = f"{key} {spec}"
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target), where)
    else:
        module = _import_module(target, where)
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"{where}: {target} has no function {name!r}")
    if not callable(fn):
        raise UserError(f"{where}: {target}.{name} is a {type(fn).__name__}, not a function")
    _check_optional_package(fn, where)
    return fn


def _is_dotted_name(text: str) -> bool:
    """`a.b.c` made of identifiers, at least one dot: a module path ending in the function's name."""
    parts = text.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def _check_optional_package(fn: Callable, where: str) -> None:
    """A UserError naming the install command when `fn` is one of TRL's functions whose optional
    package (math_verify for `accuracy_reward`) is not installed."""
    needed = NEEDS_PACKAGE.get(getattr(fn, "__module__", "") or "")
    if needed and importlib.util.find_spec(needed[0]) is None:
        raise UserError(f"{where} needs the {needed[0]} package: {needed[1]}")


def call_reward_function(
    fn: Callable,
    name: str,
    prompts: list,
    completions: list,
    *,
    completion_ids: list[list[int]] | None = None,
    trainer_state: Any = None,
    log_extra: Callable[[str, list], None] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **columns: Any,
) -> list[float]:
    """Call `fn` with TRL's keywords and check it returned one number per completion.

    Keywords the function does not declare are left out unless it takes `**kwargs` (TRL would pass
    them and fail), so a plain `fn(prompts, completions)` works too. `None` values become NaN (no
    reward for that completion); +-inf is refused.

    Example:
        >>> call_reward_function(trl.rewards.think_format_reward, "f", ["p"], ["<think>x</think>y"])
        [1.0]

    Args:
        fn: from `load_reward_function`.
        name: how errors name it, e.g. "--judge my_rules.py:fn".
        prompts, completions: one entry per completion (a prompt repeats for several samples).
        completion_ids: the sampled token ids of each completion, up to and including its stop token.
        trainer_state: the trainer's `transformers.TrainerState` (None outside training).
        log_extra, log_metric: where the function's `log_extra(column, values)` and
            `log_metric(name, value)` go; None: nowhere (the function may still call them).
        columns: the data file's other columns, one value per completion.

    Returns:
        One float per completion.

    Raises:
        UserError: `fn` cannot be called with these keywords, raised, returned the wrong number of
            values, or a value that is not a number, or is +-inf / beyond float32's range.
    """
    n = len(completions)
    arguments = {
        "prompts": prompts,
        "completions": completions,
        "completion_ids": completion_ids,
        **columns,
        "trainer_state": trainer_state,
        "log_extra": log_extra or _drop,
        "log_metric": log_metric or _drop,
    }
    arguments = _accepted_kwargs(fn, arguments, name)
    try:
        values = fn(**arguments)
    except Exception as err:  # noqa: BLE001 - the user's code: any failure is theirs, reported in one line
        raise UserError(f"{name}: raised {_describe(err)}") from None
    except SystemExit as err:  # sys.exit() in a reward function would end the run without a word
        raise UserError(f"{name}: called sys.exit({err.code!r}); a reward function must return its numbers") from None
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or not hasattr(values, "__iter__"):
        raise UserError(f"{name}: returned {type(values).__name__}, expected a list of {n} numbers")
    if len(values) != n:
        raise UserError(f"{name}: returned {len(values)} values for {n} completions (one number per completion)")
    floats = [_as_float(value, i, name) for i, value in enumerate(values)]
    if floats and all(math.isnan(v) for v in floats) and name not in _WARNED_ALL_NONE:
        # documented: None / NaN adds nothing (TRL's nansum); a whole batch of them is legal but worth a word
        _WARNED_ALL_NONE.add(name)
        logger.warning(
            "%s: no number (None/NaN) for any of %d completions: it adds nothing to their reward (warned once)",
            name,
            n,
        )
    return floats


def _drop(*_args: Any) -> None:
    """`log_extra` / `log_metric` where nothing collects what a function logs."""


def _import_file(path: Path, where: str):
    if not path.is_file():
        raise UserError(f"{where}: file not found: {path}")
    resolved = path.resolve()
    # a name of its own per file, so two judges called judge.py do not replace each other
    module_name = f"_eulerforge_reward_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise UserError(f"{where}: cannot import {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's file
        sys.modules.pop(module_name, None)
        raise UserError(f"{where}: importing {path} raised {_describe(err)}") from None
    return module


def _import_module(target: str, where: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name and (target == err.name or target.startswith(err.name + ".")):
            raise UserError(
                f"{where}: no module named {err.name!r} (for a file, write path/to/file.py:function)"
            ) from None
        raise UserError(f"{where}: importing {target} raised {_describe(err)}") from None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's module
        raise UserError(f"{where}: importing {target} raised {_describe(err)}") from None


def _accepted_kwargs(fn: Callable, kwargs: dict, name: str) -> dict:
    """The keywords `fn` takes (all of them with `**kwargs`); a UserError when it cannot be called with them."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: pass everything, as TRL does
        return kwargs
    parameters = signature.parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        kwargs = {k: v for k, v in kwargs.items() if k in named}
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise UserError(
            f"{name}: cannot be called as TRL calls reward functions, with the keywords "
            f"prompts, completions, completion_ids, the data columns, trainer_state, log_extra, log_metric ({err})"
        ) from None
    return kwargs


def _as_float(value, index: int, name: str) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):  # numpy / torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an int past float's range
            number = math.inf if value > 0 else -math.inf
        if math.isinf(number) or abs(number) > FLOAT32_MAX:
            # the rewards are float32 tensors (TRL's too): inf or an overflow there makes the advantages,
            # the loss and then the weights NaN, so it stops here, before any optimizer step sees it
            shown = "inf" if number > 0 else "-inf"
            what = f"{shown}, not a finite number" if math.isinf(number) else f"{value!r}, beyond float32's range"
            raise UserError(
                f"{name}: value {index} is {what}; return a finite number (None for no reward for this completion)"
            )
        return number
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise UserError(f"{name}: value {index} is {type(value).__name__} {shown}, not a number")


def _describe(err: BaseException) -> str:
    """`Type: first line of the message (at file:line)`, the innermost frame being where it happened."""
    message = str(err).strip().splitlines()
    text = type(err).__name__ + (f": {message[0]}" if message else "")
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    if frames:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text


__all__ = ["call_reward_function", "load_reward_function"]
