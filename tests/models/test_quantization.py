"""QLoRA: `quantization: 4bit / 8bit` loads the frozen base through bitsandbytes for every stage.

The preset rules (the `model:` spelling, full fine-tuning, vLLM, bitsandbytes missing) need no
bitsandbytes. The rest skips where bitsandbytes cannot quantize to 4 bits on this machine (its CPU
backend does since 0.4x; on older builds only with CUDA). The end-to-end runs go through
`train.main` on the built-in tiny model: SFT (LoRA) once for the module, RM on its `final/`, then
DPO, PPO and GRPO two steps each, 4 rows a step, without held-out evaluation (about 40 s in all on
2 CPU cores; PPO and GRPO, which need both earlier stages, are marked slow).
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import ModelError, PresetError

TINY_STEPS = ["training.max_steps=2", "training.batch_size=4", "training.save_steps=2", "data.eval_path=null"]


def _bnb_4bit_problem() -> str | None:
    """Why bitsandbytes cannot quantize to 4 bits here, or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install 'eulerforge-trl[qlora]')"
    try:
        import bitsandbytes as bnb

        layer = bnb.nn.Linear4bit(16, 16, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer = layer.to("cuda" if torch.cuda.is_available() else "cpu")
        layer(torch.randn(2, 16, device=layer.weight.device))
    except Exception as err:  # any failure of the backend means: not on this machine
        return f"bitsandbytes cannot run 4-bit layers here ({type(err).__name__}: {err})"
    return None


BNB_PROBLEM = _bnb_4bit_problem()
needs_bnb = pytest.mark.skipif(BNB_PROBLEM is not None, reason=BNB_PROBLEM or "")


# --- preset rules (no bitsandbytes needed) ---------------------------------------------------------


def test_quantization_is_a_top_level_key():
    assert load_preset("tiny_rm.yml", ["quantization=4bit"]).quantization == "4bit"
    assert load_preset("tiny_rm.yml").quantization is None


def test_model_section_spelling_suggests_the_top_level_key(tmp_path):
    with pytest.raises(PresetError, match=r"model\.quantization: unknown key; did you mean quantization\?"):
        load_preset("tiny_rm.yml", ["model.quantization=4bit"])
    preset = tmp_path / "p.yml"
    preset.write_text("training:\n  type: rm\nmodel:\n  quantization: 4bit\n", encoding="utf-8")
    with pytest.raises(PresetError, match=r"p\.yml:4: model\.quantization: unknown key; did you mean quantization"):
        load_preset(preset)


def test_full_fine_tuning_with_quantization_is_refused():
    with pytest.raises(PresetError, match=r"quantization=4bit .* full fine-tuning cannot train it: add a lora"):
        load_preset("tiny_sft.yml", ["quantization=4bit"])  # tiny_sft has no lora: section


def test_vllm_with_quantization_is_refused():
    with pytest.raises(PresetError, match=r"generation\.backend=vllm with quantization=8bit"):
        load_preset("tiny_ppo.yml", ["quantization=8bit", "generation.backend=vllm"])
    load_preset("tiny_ppo.yml", ["quantization=8bit"])  # hf generation is fine


def test_bitsandbytes_missing_is_one_line(monkeypatch, tiny_argv, tmp_path, capsys):
    from eulerforge_trl.models.loading import load_causal_lm
    from eulerforge_trl.train import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ModelError, match=r"pip install 'eulerforge-trl\[qlora\]'"):
        load_causal_lm("tiny-qwen3.5", quantization="4bit")
    code = main(tiny_argv("tiny_sft.yml", tmp_path, "quantization=4bit", "lora.r=4", *TINY_STEPS))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "error: quantization=4bit needs bitsandbytes: pip install 'eulerforge-trl[qlora]' (or set quantization=null)"
    )


# --- loading ---------------------------------------------------------------------------------------


@needs_bnb
@pytest.mark.parametrize(("quantization", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_tiny_base_loads_quantized(quantization, layer):
    from eulerforge_trl.models.loading import is_quantized, load_causal_lm

    model = load_causal_lm("tiny-qwen3.5", quantization=quantization)
    assert is_quantized(model)
    assert _quantized_layers(model, layer) == _linear_count()  # every decoder linear, lm_head left alone
    assert type(model.lm_head).__name__ == "Linear"
    assert model.name_or_path == "tiny-qwen3.5"  # not the temporary directory it was loaded from


def _linear_count() -> int:
    from eulerforge_trl.models.tiny import build_tiny_model

    model = build_tiny_model()
    return sum(isinstance(m, torch.nn.Linear) for n, m in model.named_modules() if n != "lm_head")


def _quantized_layers(model, layer: str) -> int:
    return sum(type(m).__name__ == layer for m in model.modules())


# --- every stage, end to end -----------------------------------------------------------------------


@pytest.fixture
def loads(monkeypatch):
    """Every model `load_causal_lm` returns during the test, with the quantization it was asked for."""
    from eulerforge_trl.models import loading

    real, seen = loading.load_causal_lm, []

    def recording(*args, **kwargs):
        model = real(*args, **kwargs)
        seen.append((kwargs.get("quantization"), model))
        return model

    monkeypatch.setattr(loading, "load_causal_lm", recording)
    return seen


def _trained_on_4bit(loads) -> None:
    quantized = [model for quantization, model in loads if quantization == "4bit"]
    assert quantized, "the stage loaded no base with quantization=4bit"
    assert _quantized_layers(quantized[0], "Linear4bit") >= _linear_count()  # + the LoRA-wrapped ones


@pytest.fixture(scope="module")
def qlora_sft(tmp_path_factory, tiny_argv):
    from eulerforge_trl.train import main

    out = tmp_path_factory.mktemp("qlora_sft")
    assert main(tiny_argv("tiny_sft.yml", out, "quantization=4bit", "lora.r=4", *TINY_STEPS)) == 0
    return out / "final"


@pytest.fixture(scope="module")
def qlora_rm(tmp_path_factory, tiny_argv, qlora_sft):
    from eulerforge_trl.train import main

    out = tmp_path_factory.mktemp("qlora_rm")
    assert main(tiny_argv("tiny_rm.yml", out, f"model_name={qlora_sft}", "quantization=4bit", *TINY_STEPS)) == 0
    return out / "final"


@needs_bnb
def test_sft_final_is_merged_in_full_precision(qlora_sft):
    from eulerforge_trl.models.loading import is_quantized, load_causal_lm

    config = json.loads((qlora_sft / "config.json").read_text())
    assert "quantization_config" not in config  # merged into the full-precision base, loads without bitsandbytes
    model = load_causal_lm(str(qlora_sft))
    assert not is_quantized(model) and model.dtype == torch.float32


@needs_bnb
def test_rm_trains_on_a_4bit_base(tiny_argv, tmp_path, qlora_sft, loads):
    from eulerforge_trl.models.scorer import load_reward_model, score
    from eulerforge_trl.train import main

    assert main(tiny_argv("tiny_rm.yml", tmp_path, f"model_name={qlora_sft}", "quantization=4bit", *TINY_STEPS)) == 0
    _trained_on_4bit(loads)
    scorer, tokenizer = load_reward_model(str(tmp_path / "final"))
    assert len(score(scorer, tokenizer, ["Q: a cat?"], [" A: yes"])) == 1


@needs_bnb
def test_dpo_trains_on_a_4bit_base(tiny_argv, tmp_path, qlora_sft, loads):
    from eulerforge_trl.models.loading import is_quantized, load_causal_lm
    from eulerforge_trl.train import main

    assert main(tiny_argv("tiny_dpo.yml", tmp_path, f"model_name={qlora_sft}", "quantization=4bit", *TINY_STEPS)) == 0
    _trained_on_4bit(loads)
    assert not is_quantized(load_causal_lm(str(tmp_path / "final")))


@needs_bnb
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_rl_policy_on_a_4bit_base_reference_is_adapters_off(stage, tiny_argv, tmp_path, qlora_sft, qlora_rm, loads):
    """PPO and GRPO train their policy adapter on the 4-bit base; the reference (adapters disabled)
    is exactly that base, and the policy differs from it only through the adapter."""
    from peft import PeftModel

    from eulerforge_trl.models.loading import load_causal_lm
    from eulerforge_trl.train import main

    extra = ["training.ppo.max_gen_len=8"] if stage == "ppo" else ["training.grpo.max_completion_length=8"]
    argv = tiny_argv(
        f"tiny_{stage}.yml",
        tmp_path,
        f"model_name={qlora_sft}",
        f"training.reward_model.checkpoint_path={qlora_rm}",
        "quantization=4bit",
        *TINY_STEPS,
        *extra,
    )
    assert main(argv) == 0
    _trained_on_4bit(loads)
    final = tmp_path / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == str(qlora_sft)

    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    base = load_causal_lm(str(qlora_sft), quantization="4bit").eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        policy = PeftModel.from_pretrained(base, str(final)).eval()
        policy_logits = policy(input_ids=ids).logits
        with policy.disable_adapter():
            reference_logits = policy(input_ids=ids).logits
    assert torch.equal(reference_logits, base_logits)
    assert not torch.allclose(policy_logits, base_logits)  # the trained adapter moved the policy
    full = load_causal_lm(str(final))  # and final/ loads as a full-precision model_name
    assert full.dtype == torch.float32
