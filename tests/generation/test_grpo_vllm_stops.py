"""GRPO with `generation.backend: vllm` stops where PPO stops: at EOS and at the chat template's end of
turn when that is another token (Qwen's `<|im_end|>` vs `<|endoftext|>`).

The tiny Llama SFT model writes "The cat ... is happy, kind and calm." then EOS; its `,` is marked
special and closes the assistant turn, so a completion that runs past the turn end carries the text
after the comma to the reward functions. (The hf backend's twin: tests/stages/test_grpo_generation.py.)
"""

from __future__ import annotations

import json
import shutil

import pytest

from eulerforge_trl.models.loading import load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

TURN_END = ","
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}\nAnswer:"
    "{% else %} {{ m['content'] }},{% endif %}{% endfor %}"
)
SEEN = """
import json
from pathlib import Path


def seen(prompts, completions, completion_ids, **kwargs):
    with Path(__file__).with_name("seen.jsonl").open("a") as f:
        for c, ids in zip(completions, completion_ids):
            f.write(json.dumps({"text": "".join(m["content"] for m in c), "ids": list(ids)}) + "\\n")
    return [0.0] * len(completions)
"""


@pytest.mark.slow  # the real engine
def test_vllm_completions_stop_at_the_chat_templates_turn_end(tmp_path, tiny_argv, tiny_llama_sft_final):
    pytest.importorskip("vllm", reason="vLLM is not installed: make install-vllm")
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_sft_final, model)
    tokenizer = load_tokenizer(str(tiny_llama_sft_final))
    tokenizer.add_special_tokens({"additional_special_tokens": [TURN_END]})  # an existing token: no new id
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(model)
    stop, eos = tokenizer.convert_tokens_to_ids(TURN_END), tokenizer.eos_token_id
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "rules.py").write_text(SEEN, encoding="utf-8")
    data = tmp_path / "chat_prompts.jsonl"
    topics = ["the cat near the park", "the dog near the house", "the owl in the lake", "the wolf near the farm"]
    data.write_text(
        "".join(json.dumps({"prompt": [{"role": "user", "content": f"Describe {t}."}]}) + "\n" for t in topics)
    )
    argv = tiny_argv(
        "tiny_grpo.yml",
        tmp_path / "out",
        f"model_name={model}",
        "training.reward_model.checkpoint_path=",
        f"training.reward_funcs=[{tmp_path / 'rewards' / 'rules.py'}:seen]",
        f"data.path={data}",
        "generation.backend=vllm",
        "generation.vllm_enforce_eager=true",  # no compile: a faster start for a test
        "data.max_prompt_length=64",  # + max_completion_length within the tiny Llama's 256 positions
        "training.batch_size=8",
        "training.grpo.num_generations=4",
        "training.max_steps=2",
        "training.save_steps=100",
        "training.grpo.max_completion_length=24",
        "training.grpo.mask_truncated_completions=true",
    )
    assert main(argv) == 0
    seen = [json.loads(line) for line in (tmp_path / "rewards" / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 16
    for s in seen:
        assert stop not in s["ids"][:-1] and eos not in s["ids"][:-1], s  # nothing after the turn end
        assert s["text"] == tokenizer.decode(s["ids"], skip_special_tokens=True)
    assert sum(s["ids"][-1] == stop for s in seen) >= 8, seen  # the turn end is where they stop
    ended = [s["ids"][-1] in (stop, eos) for s in seen]  # finished, not truncated
    history = [r for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "completions/clipped_ratio" in r]
    clipped = sum(r["completions/clipped_ratio"] for r in history) / len(history)
    assert clipped == pytest.approx(1 - sum(ended) / len(ended))
