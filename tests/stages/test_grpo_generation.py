"""GRPO's sampling through TRL: where completions stop, and `generation.compile` on the hf backend.

- Stops: a chat template whose turn end is a special token other than EOS (Qwen's `<|im_end|>` vs
  `<|endoftext|>`). Here the tiny SFT model's `,` is marked special and closes the assistant turn:
  the model writes "The cat ... is happy, kind and calm." and then EOS, so a completion that runs
  past the turn end carries the text after the comma to the reward functions.
- Compile: TRL turns transformers' compile off; with `generation.compile=true` the decode step is
  compiled (transformers compiles on a CPU too when the CompileConfig allows every device), here in
  the configuration a GPU runs: bf16 weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from eulerforge_trl.models.loading import load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

TURN_END = ","
# user turns render as the tiny SFT model's plain prompts; an assistant turn ends with TURN_END
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}\nAnswer:"
    "{% else %} {{ m['content'] }},{% endif %}{% endfor %}"
)

# Reward functions with TRL's signature; `seen` writes what it received next to this file.
FUNCTIONS = """
import json
from pathlib import Path

PLEASANT = ("happy", "bright", "kind", "calm", "warm", "gentle", "joyful", "sweet")


def _text(c):
    return c if isinstance(c, str) else "".join(m["content"] for m in c)


def seen(prompts, completions, completion_ids, trainer_state, **kwargs):
    with Path(__file__).with_name("seen.jsonl").open("a") as f:
        for c, ids in zip(completions, completion_ids):
            f.write(json.dumps({"step": trainer_state.global_step, "text": _text(c), "ids": list(ids)}) + "\\n")
    return [0.0] * len(completions)


def pleasant_count(prompts, completions, **kwargs):
    return [sum(w.strip(".,").lower() in PLEASANT for w in _text(c).split()) / 3.0 for c in completions]
"""


@pytest.fixture
def functions_file(tmp_path):
    path = tmp_path / "rewards" / "rules.py"
    path.parent.mkdir()
    path.write_text(FUNCTIONS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def turn_end_model(tmp_path_factory, tiny_sft_final):
    """The tiny SFT model with a chat template whose turn end (`,`, marked special) is not EOS."""
    out = tmp_path_factory.mktemp("turn_end") / "model"
    shutil.copytree(tiny_sft_final, out)
    tokenizer = load_tokenizer(str(tiny_sft_final))
    tokenizer.add_special_tokens({"additional_special_tokens": [TURN_END]})  # an existing token: no new id
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def _grpo(tiny_argv, out, model, *overrides):
    return tiny_argv(
        "tiny_grpo.yml",
        out,
        f"model_name={model}",
        "training.reward_model.checkpoint_path=",
        "training.batch_size=8",
        "training.grpo.num_generations=4",
        "training.save_steps=100",
        *overrides,
    )


def test_completions_stop_at_the_chat_templates_turn_end(tmp_path, tiny_argv, turn_end_model, functions_file):
    """No completion reaching the reward functions runs past the turn end, and one that ends there is
    finished, not truncated (TRL's clipped_ratio, which `mask_truncated_completions` acts on)."""
    tokenizer = load_tokenizer(str(turn_end_model))
    stop, eos = tokenizer.convert_tokens_to_ids(TURN_END), tokenizer.eos_token_id
    assert stop != eos and len(tokenizer) == 512
    data = tmp_path / "chat_prompts.jsonl"
    topics = ["the cat near the park", "the dog near the house", "the owl in the lake", "the wolf near the farm"]
    data.write_text(
        "".join(json.dumps({"prompt": [{"role": "user", "content": f"Describe {t}."}]}) + "\n" for t in topics)
    )
    argv = _grpo(
        tiny_argv,
        tmp_path / "out",
        turn_end_model,
        f"data.path={data}",
        f"training.reward_funcs=[{functions_file}:seen]",
        "training.max_steps=2",
        "training.grpo.max_completion_length=24",
        "training.grpo.mask_truncated_completions=true",
    )
    assert main(argv) == 0
    seen = [json.loads(line) for line in (functions_file.parent / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 16
    for s in seen:
        assert stop not in s["ids"][:-1] and eos not in s["ids"][:-1], s  # nothing after the turn end
        assert s["text"] == tokenizer.decode(s["ids"], skip_special_tokens=True)  # the text is those ids
    ended = [s["ids"][-1] in (stop, eos) for s in seen]
    assert sum(s["ids"][-1] == stop for s in seen) >= 8, seen  # the turn end is where they stop
    history = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "completions/clipped_ratio" in r]
    clipped = sum(r["completions/clipped_ratio"] for r in history) / len(history)
    assert clipped == pytest.approx(1 - sum(ended) / len(ended))


@pytest.mark.slow  # a compile of the tiny model: make test runs it, make test-fast does not
def test_bf16_compiled_decoding_trains_and_leaves_the_base_alone(tmp_path, tiny_argv, tiny_sft_final, functions_file):
    """`training.precision=bf16`, `generation.compile=true`: transformers compiles TRL's decode step,
    the run finishes, the base (adapters off) is bit for bit the SFT model, and the reward rises."""
    from torch._dynamo.utils import counters
    from trl import GRPOTrainer

    from eulerforge_trl.models.loading import load_causal_lm

    seen = {}
    original_train = GRPOTrainer.train

    def spy(self, *args, **kwargs):
        graphs = counters["stats"]["unique_graphs"]
        result = original_train(self, *args, **kwargs)
        seen["graphs"] = counters["stats"]["unique_graphs"] - graphs
        seen["model"] = self.model
        return result

    steps = 12
    argv = _grpo(
        tiny_argv,
        tmp_path / "out",
        tiny_sft_final,
        f"training.reward_funcs=[{functions_file}:pleasant_count]",
        "training.precision=bf16",
        "generation.compile=true",
        f"training.max_steps={steps}",
        "training.lr=3e-3",
        "training.grpo.max_completion_length=16",
    )
    GRPOTrainer.train = spy
    try:
        assert main(argv) == 0
    finally:
        GRPOTrainer.train = original_train
    model = seen["model"]
    assert seen["graphs"] >= 1 and hasattr(model.get_base_model(), "_compiled_call")  # decoding compiled
    fresh = load_causal_lm(str(tiny_sft_final), dtype=torch.bfloat16).state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in model.get_base_model().state_dict().items() if "lora_" not in k}
    assert base.keys() == fresh.keys()
    assert all(base[k].dtype == torch.bfloat16 and torch.equal(base[k], fresh[k]) for k in fresh)
    history = [r["reward_mean"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "reward_mean" in r]
    assert len(history) == steps
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last > first + 0.2, history
