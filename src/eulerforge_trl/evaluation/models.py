"""The models of one evaluation in memory: one shared base with every adapter on it, as PPO keeps them.

A model is anything `model_name` takes: a stage's `final/`, which is either a full model (SFT;
DPO, whose adapter is merged) or a LoRA adapter at the top of the directory whose
`adapter_config.json` names its base (PPO: the SFT `final/`); any transformers model directory; a
built-in name such as `smollm2-135m-instruct` (the usual baseline: the model you started from); a hub id.
The base that most models build on (the RM's, when it is one of them) is loaded once as a peft
model; each adapter on it is loaded by name and switched to, the base itself is the same model
with adapters disabled, and the RM adapter + RewardHead sits beside them (`RewardScorer.attach`).
A model on another base is loaded on its own (its adapter merged), a simple fallback.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelError, UserError
from ..models.loading import adapter_base, clean_generation_config, load_causal_lm, load_tokenizer, resolved_model_name
from ..models.locate import check_model_name
from ..models.reward_files import HEAD_FILE, is_reward_dir
from ..models.scorer import REWARD_ADAPTER, RewardScorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One `--models` entry, read from its files before anything is loaded."""

    name: str  # as the user wrote it: the key of summary.json
    source: str  # what loads it: an absolute directory, or a built-in or hub name
    adapter: bool  # a LoRA adapter directory (PPO's final/), else a full model
    base: str  # what it builds on (`resolved_model_name`): its adapter's base, else itself


def inspect_model(name: str) -> ModelSpec:
    """What `name` is, as `model_name` takes it: a stage's `final/`, any local transformers model or
    adapter directory, a built-in name (`tiny-qwen3.5`, `smollm2-135m-instruct`) or a hub id.

    Raises:
        UserError: one line naming the `--models` entry: an RM (it goes in --reward), a directory
            holding no model, a name that is neither a built-in nor a hub id the cache or hub has.
    """
    path = Path(name).expanduser()
    where = f"--models {name}"
    if not path.is_dir():
        if path.exists():
            raise UserError(f"{where}: a file; give a model directory (a stage's final/), a built-in or hub name")
        check_model_name(name, key="--models")  # a built-in is fetched now; a typo or an unknown hub id stops here
        return ModelSpec(name, name, adapter=False, base=name)
    if is_reward_dir(path):
        raise UserError(f"{where}: this is a reward model ({HEAD_FILE}); pass it with --reward")
    if (path / "config.json").is_file():
        return ModelSpec(name, str(path.resolve()), adapter=False, base=resolved_model_name(str(path)))
    if (path / "adapter_config.json").is_file():
        try:
            config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"{where}: adapter_config.json is not valid JSON ({err})") from None
        if not config.get("base_model_name_or_path"):
            raise UserError(f"{where}: adapter_config.json names no base_model_name_or_path")
        if config.get("task_type") not in (None, "CAUSAL_LM"):
            raise UserError(f"{where}: a {config['task_type']} adapter, not a causal LM's (an RM goes in --reward)")
        base = adapter_base(str(path))
        return ModelSpec(name, str(path.resolve()), adapter=True, base=resolved_model_name(base))
    hint = f"; did you mean {path / 'final'}?" if (path / "final").is_dir() else " (is the stage finished?)"
    raise UserError(f"{where}: holds no config.json or adapter_config.json, so it is not a model directory{hint}")


def shared_base_of(specs: list[ModelSpec], reward_meta: dict | None) -> str:
    """The base to keep in memory: the RM's when a model builds on it, else the one most models
    build on (the first model's on a tie)."""
    bases = [s.base for s in specs]
    if reward_meta and reward_meta.get("base_model") in bases:
        return reward_meta["base_model"]
    counts = Counter(bases)
    return max(bases, key=lambda b: (counts[b], -bases.index(b)))


@dataclass
class ModelSet:
    """Every model of an evaluation, loaded; `active(i)` yields model i ready for `generate`/forwards."""

    specs: list[ModelSpec]
    tokenizers: list  # one per model (left padding, for generation)
    shared: object  # the shared base: a peft model when any adapter (policy or RM) is on it
    base_name: str
    adapters: dict[int, str] = field(default_factory=dict)  # model index -> adapter name on `shared`
    alone: dict[int, object] = field(default_factory=dict)  # model index -> a model loaded on its own
    scorer: RewardScorer | None = None
    reward_tokenizer: object = None

    @contextmanager
    def active(self, i: int):
        """Model i in eval mode: its adapter on the shared base, the base with adapters off, or its own model."""
        if i in self.alone:
            yield self.alone[i]
        elif i in self.adapters:
            self.shared.set_adapter(self.adapters[i], inference_mode=True)
            yield self.shared
        else:  # the shared base itself
            with self.shared.disable_adapter() if hasattr(self.shared, "disable_adapter") else nullcontext():
                yield self.shared


def load_model_set(
    specs: list[ModelSpec], reward: str | None, reward_meta: dict | None, device, dtype=None, chat_template=None
) -> ModelSet:
    """Load the shared base once with every adapter on it, the RM beside them, and the other models alone.

    `chat_template` (checked: `resolve_chat_template`) replaces every tokenizer's template, the RM's too.

    Raises:
        ModelError: a model that does not load (named by its --models entry), an RM whose base is not
            the models' shared base in shape.
    """
    base_name = shared_base_of(specs, reward_meta)
    tokenizers = [_tokenizer(s, chat_template) for s in specs]
    base_tokenizer = next((t for s, t in zip(specs, tokenizers) if s.base == base_name), None)
    try:
        shared = load_causal_lm(base_name, dtype=dtype, tokenizer=base_tokenizer)
    except ModelError as err:
        users = ", ".join(s.name for s in specs if s.base == base_name)
        raise ModelError(f"--models {users}: cannot load their base: {err}") from None
    clean_generation_config(shared, base_tokenizer)
    shared.to(device)
    on_base = [i for i, s in enumerate(specs) if s.base == base_name and s.adapter]
    adapters = {i: f"model_{i}" for i in on_base}
    if adapters or reward:
        shared = _with_adapters(shared, [(adapters[i], specs[i]) for i in on_base], reward)
    models = ModelSet(specs, tokenizers, shared, base_name, adapters)
    if reward:
        # the same-base rule of PPO and GRPO (models.fingerprint.check_same_base): other shapes are an
        # error, the same shapes with other weights a warning naming both fingerprints
        models.scorer = RewardScorer.attach(shared, reward, base_name, REWARD_ADAPTER, key="--reward")
        has_tokenizer = (Path(reward) / "tokenizer_config.json").is_file()
        models.reward_tokenizer = load_tokenizer(reward if has_tokenizer else base_name, chat_template)
    for i, spec in enumerate(specs):
        if spec.base != base_name:
            what = f"an adapter on {spec.base}" if spec.adapter else "a full model"
            logger.warning("%s is %s, not on the shared base %s: loading it on its own", spec.name, what, base_name)
            try:
                model = load_causal_lm(spec.source, dtype=dtype, tokenizer=tokenizers[i])
            except ModelError as err:
                raise ModelError(f"--models {spec.name}: {err}") from None
            clean_generation_config(model, tokenizers[i])
            models.alone[i] = model.to(device).eval()
    shared.eval()  # no dropout (LoRA dropout included); the KV cache works with gradient checkpointing
    return models


def _tokenizer(spec: ModelSpec, chat_template: str | None):
    try:
        tokenizer = load_tokenizer(spec.source, chat_template)
    except ModelError as err:
        raise ModelError(f"--models {spec.name}: {err}") from None
    tokenizer.padding_side = "left"  # prompts are left-padded for generate
    return tokenizer


def _with_adapters(base, adapters: list[tuple[str, ModelSpec]], reward: str | None):
    """`base` as a causal-LM peft model holding each adapter under its name (the RM's is attached later).

    The wrapper is built from the first adapter's config; an RM's (SEQ_CLS) config is fine for that:
    only its LoRA layers are used, its score head lives in `reward_head.pt`.
    """
    from peft import PeftConfig, PeftModelForCausalLM

    first_name, first_dir = adapters[0] if adapters else (REWARD_ADAPTER, Path(reward))
    first_dir = first_dir.source if isinstance(first_dir, ModelSpec) else first_dir
    config = PeftConfig.from_pretrained(str(first_dir))
    config.inference_mode = True
    model = PeftModelForCausalLM(base, config, adapter_name=first_name)
    for name, spec in adapters:
        try:
            model.load_adapter(spec.source, adapter_name=name, is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(
                f"--models {spec.name}: cannot load this adapter onto its base {spec.base}: {reason}"
            ) from None
    return model
