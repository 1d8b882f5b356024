"""LoRA merging, the one place it is written: a LoRA adapter merged into its base for a `final/`, an
export, an adapter loaded as a model, and the rollout engines that hold their own copy of the policy
(`vllm`, and `hf` with `generation.merged_copy`).

A model that is used up by the merge (loaded or trained for the one save) goes through peft's
`merge_and_unload`, in place. A model that goes on training or sampling (PPO, GRPO) is never merged
in place: merging and unmerging after would leave bf16 rounding in the base, which is also the
reference (adapters off). Its merged weights are base + delta in new memory, and the training model
is never touched (`merged_model(keep=True)`, `iter_merged_weights`, `MergedCopy`).

A model whose LM head is tied to its input embedding (SmolLM2, tiny-qwen3.5) with a LoRA on either of
the two gets an untied copy: the head is base + the head's delta, the embedding base + the
embedding's delta, each in memory of its own (writing the head's merge into the shared tensor would
move the embedding, and with it the reference).
"""

from __future__ import annotations

import copy as copying

import torch

from ..runtime import whole_tensor


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_name(name: str) -> str:
    """A peft-wrapped module's weight name -> its transformers name."""
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def lora_layers(model, adapter: str | None) -> dict[str, torch.nn.Module]:
    """{transformers weight name: peft LoRA layer} for the layers holding `adapter`: linear ones
    (`lora_A`) and embeddings (`lora_embedding_A`)."""
    from peft.tuners.lora import LoraLayer

    if adapter is None:
        return {}
    return {
        f"{name}.weight": module
        for name, module in base_model(model).named_modules()
        if isinstance(module, LoraLayer)
        and (adapter in getattr(module, "lora_A", {}) or adapter in getattr(module, "lora_embedding_A", {}))
    }


def merged_weight(layer, adapter: str) -> torch.Tensor:
    """One LoRA layer's base weight + `adapter`'s delta, in new memory, gathered whole if sharded."""
    base = layer.get_base_layer().weight
    return whole_tensor(base + layer.get_delta_weight(adapter).to(base.dtype))


def untied_keys(model, adapter: str | None) -> dict[str, str]:
    """{tied weight (lm_head.weight): its source (the embedding)} for the ties a LoRA of `adapter`
    breaks: the head or the embedding LoRA'd, so the merged head is not the merged embedding."""
    base = base_model(model)
    layers = lora_layers(model, adapter)
    tied = getattr(base, "all_tied_weights_keys", None) or {}
    return {target: source for target, source in tied.items() if target in layers or source in layers}


def iter_merged_weights(model, adapter: str | None, *, tied_head: bool = False):
    """The base model's weights under their transformers names, one (name, tensor) at a time: each LoRA
    layer's weight merged with `adapter`'s delta in new memory as it is reached, the others the
    model's own tensors (no copy), a sharded model's gathered whole tensor by tensor (a collective:
    every process iterates, in the same order). Streaming keeps at most one merged tensor alive
    (the vLLM push); `merged_weights` collects them.

    A tied LM head is left out (it is the embedding) unless a LoRA breaks the tie (`untied_keys`):
    then `lm_head.weight` is there, base + the head's delta (or the base embedding itself when only
    the embedding is LoRA'd), and whoever loads these weights must untie its head. `tied_head` asks
    for a tied head anyway (vLLM's CPU build keeps a packed copy of the head that the first push
    must reach).
    """
    base = base_model(model)
    layers = lora_layers(model, adapter)
    untied = untied_keys(model, adapter)
    tied = set(getattr(base, "all_tied_weights_keys", None) or {"lm_head.weight": None})
    if not getattr(base.config, "tie_word_embeddings", False):
        tied = set()
    for name, tensor in base.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        name = plain_name(name)
        if name in tied and name not in untied and not (tied_head and name == "lm_head.weight"):
            continue
        with torch.no_grad():  # not around the yield: the consumer's grad mode is its own
            weight = merged_weight(layers[name], adapter) if name in layers else whole_tensor(tensor)
        yield name, weight


def merged_weights(model, adapter: str | None) -> dict[str, torch.Tensor]:
    """`iter_merged_weights` as one dict (the merged copy holds them all)."""
    return dict(iter_merged_weights(model, adapter))


def merged_model(model, adapter: str = "default", *, keep: bool = False):
    """`model` (a peft model) as a plain transformers model with its LoRA `adapter` merged in.

    Args:
        keep: False for a model used up by the merge (loaded or trained for this save): peft's
            `merge_and_unload`, in place, other adapters dropped. True for a model that goes on
            training or sampling: out of place (`MergedCopy`), `model` untouched, the weights LoRA does
            not touch shared with it.
    """
    if not keep:
        return model.merge_and_unload(adapter_names=[adapter])
    return MergedCopy(model, adapter).model


def merged_into(base, model, adapter: str = "default"):
    """`adapter` of the peft `model` merged into `base`, a fresh copy of the same base: a quantized
    model's adapter into its full-precision base, which holds the merged weights exactly (a 4/8-bit
    base would round the sum back to 4 or 8 bits). `model` is untouched."""
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    target = get_peft_model(base, copying.deepcopy(model.peft_config[adapter]), adapter_name=adapter)
    set_peft_model_state_dict(target, get_peft_model_state_dict(model, adapter_name=adapter), adapter_name=adapter)
    return merged_model(target, adapter)


def merges_by_default(model) -> bool:
    """`generation.merged_copy: null`: on with CUDA, where LoRA's hooks dominate decoding, unless the
    base is quantized (a full-precision copy undoes the saving) or sharded (a full copy per process)."""
    base = base_model(model)
    weight = next(base.parameters())
    quantized = getattr(base, "is_quantized", False) or getattr(base, "hf_quantizer", None) is not None
    return weight.device.type == "cuda" and not quantized and not hasattr(weight, "full_tensor")


def untied_config(config):
    """A copy of `config` whose LM head is a weight of its own (`tie_word_embeddings` false)."""
    config = copying.deepcopy(config)
    config.tie_word_embeddings = False
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and text is not config:
        text.tie_word_embeddings = False
    return config


class MergedCopy:
    """A plain transformers model (no peft layers, so no LoRA hooks while decoding) holding the
    policy's merged weights, refreshed in place after each optimizer step.

    It costs memory only for the weights LoRA touches: every other weight is the training model's
    own tensor (a sharded model's is gathered whole once). Refreshing writes into the same tensors,
    so a compiled decode step (static cache, CUDA graphs) keeps its addresses, and never into one the
    training model holds (checked when the copy is built).
    """

    def __init__(self, model, adapter: str):
        self.adapter = adapter
        self.layers = lora_layers(model, adapter)
        if not self.layers:
            raise ValueError(f"the model has no LoRA layers of adapter {adapter!r} to merge")
        base = base_model(model)
        untied = untied_keys(model, adapter)
        with torch.device("meta"):
            copy = type(base)(untied_config(base.config) if untied else base.config)
        weights = {
            name: torch.nn.Parameter(t, requires_grad=False) for name, t in merged_weights(model, adapter).items()
        }
        missing, unexpected = copy.load_state_dict(weights, strict=False, assign=True)
        if unexpected or (set(missing) - {"lm_head.weight"}) or (untied and missing):
            raise RuntimeError(f"merged copy of {type(base).__name__}: missing {missing}, unexpected {unexpected}")
        for name, buffer in base.named_buffers():  # non-persistent ones (rotary frequencies) are not in the state dict
            owner, _, leaf = plain_name(name).rpartition(".")
            if leaf in copy.get_submodule(owner)._buffers:
                copy.get_submodule(owner)._buffers[leaf] = buffer
        if not untied:
            copy.tie_weights()
        copy.generation_config = base.generation_config
        self.model = copy.eval().requires_grad_(False)
        self.targets = dict(self.model.named_parameters(remove_duplicate=False))
        own = {p.data_ptr() for p in model.parameters()}
        if shared := [name for name in self.layers if self.targets[name].data_ptr() in own]:
            raise RuntimeError(f"merged copy: refreshing {shared} would write into the training model's weights")

    @torch.no_grad()
    def refresh(self) -> None:
        """The copy's merged weights recomputed from the policy's current LoRA weights."""
        for name, layer in self.layers.items():
            self.targets[name].copy_(merged_weight(layer, self.adapter))
