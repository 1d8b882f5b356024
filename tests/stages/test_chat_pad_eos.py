"""Real-tokenizer conditions on the tiny model: pad == EOS, a chat template, conversational data.

Most Llama/Qwen-family tokenizers ship pad == EOS and a chat template. The fixture saves the tiny
SFT model with such a tokenizer (nothing added to the vocabulary) and the example task as TRL's
conversational rows; every stage must run on it, read the reward at the last token the attention
mask marks, and keep prompts as written in samples.jsonl.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from eulerforge_trl.data.render import prompt_ids, reward_batch, reward_ids
from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.train import main

# A ChatML-like template whose turns end with the tiny tokenizer's EOS (which is also its pad here).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|endoftext|>\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt.replace("\nAnswer:", "")}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text.strip()}]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tiny_sft_final):
    """The tiny SFT model saved with a pad == EOS tokenizer that has a chat template."""
    out = tmp_path_factory.mktemp("chat_model") / "model"
    shutil.copytree(tiny_sft_final, out)
    tokenizer = load_tokenizer(str(tiny_sft_final))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory, example_data):
    """The example task as conversational rows: SFT `messages`, preference and prompt message lists."""
    out = tmp_path_factory.mktemp("chat_data")

    def rows(name):
        return [json.loads(line) for line in (example_data / name).read_text(encoding="utf-8").splitlines()]

    _write_jsonl(
        out / "sft.jsonl",
        [{"messages": _user(r["prompt"]) + _assistant(r["response"])} for r in rows("sft.jsonl")[:200]],
    )
    for name in ("preference.jsonl", "preference_eval.jsonl"):
        pairs = rows(name)[:600]
        _write_jsonl(
            out / name,
            [
                {"prompt": _user(r["prompt"]), "chosen": _assistant(r["chosen"]), "rejected": _assistant(r["rejected"])}
                for r in pairs
            ],
        )
    _write_jsonl(out / "prompts.jsonl", [{"prompt": _user(r["prompt"])} for r in rows("prompts.jsonl")])
    return out


def test_pad_equal_to_eos_is_kept_and_nothing_is_added(chat_model):
    tokenizer = load_tokenizer(str(chat_model))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert len(tokenizer) == load_causal_lm(str(chat_model)).get_input_embeddings().weight.shape[0]


def test_rendering_follows_the_chat_template(chat_model):
    tokenizer = load_tokenizer(str(chat_model))
    prompt = [{"role": "user", "content": "Describe the cat."}]
    assert tokenizer.decode(prompt_ids(tokenizer, prompt)) == "user: Describe the cat.<|endoftext|>\nassistant:"
    rendered = tokenizer.decode(reward_ids(tokenizer, prompt, "The cat is calm."))
    assert rendered == "user: Describe the cat.<|endoftext|>\nassistant: The cat is calm.<|endoftext|>\n"
    # plain text: EOS appended once, as TRL's RewardTrainer does
    assert tokenizer.decode(reward_ids(tokenizer, "Q:", " A")) == "Q: A<|endoftext|>"
    assert tokenizer.decode(reward_ids(tokenizer, "Q:", " A<|endoftext|>")) == "Q: A<|endoftext|>"


def test_end_of_turn_token_stops_answers_when_it_is_not_eos():
    """Qwen base tokenizers: EOS `<|endoftext|>`, but chat turns end with `<|im_end|>`."""
    from eulerforge_trl.data.render import stop_token_ids
    from eulerforge_trl.models.tiny import load_tiny_tokenizer

    tokenizer = load_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer, conversational=True) == [tokenizer.eos_token_id, im_end]
    assert stop_token_ids(tokenizer, conversational=False) == [tokenizer.eos_token_id]


def test_classifier_reads_the_score_at_the_last_real_token_when_pad_is_eos(chat_model):
    """transformers' own classifiers skip every pad id, the EOS included; ours follows the mask."""
    from eulerforge_trl.models.reward_head import sequence_classifier_on

    tokenizer = load_tokenizer(str(chat_model))
    classifier = sequence_classifier_on(load_causal_lm(str(chat_model), tokenizer=tokenizer), str(chat_model)).eval()
    prompts = [[{"role": "user", "content": "Describe the dog."}]] * 2
    ids, mask = reward_batch(tokenizer, prompts, ["The dog is kind and warm and happy.", "Kind."])
    assert ids[1, -1].item() == tokenizer.eos_token_id and mask[1, -1].item() == 0  # padded with EOS
    with torch.no_grad():
        batched = classifier(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        alone = classifier(input_ids=ids[1:, : mask[1].sum()], attention_mask=mask[1:, : mask[1].sum()]).logits
        # the last real token is the template's "\n" after EOS; dropping it must change the score
        shorter = classifier(input_ids=ids[1:, : mask[1].sum() - 1], attention_mask=mask[1:, : mask[1].sum() - 1])
    assert batched[1].item() == pytest.approx(alone.item(), abs=1e-4)
    assert shorter.logits.item() != pytest.approx(alone.item(), abs=1e-4)


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory, tiny_argv, chat_model, chat_data):
    out = tmp_path_factory.mktemp("chat_rm")
    argv = tiny_argv(
        "tiny_rm.yml",
        out,
        f"model_name={chat_model}",
        f"data.path={chat_data / 'preference.jsonl'}",
        f"data.eval_path={chat_data / 'preference_eval.jsonl'}",
        "training.max_steps=60",
        "training.save_steps=60",
    )
    assert main(argv) == 0
    return out


def test_rm_learns_conversational_pairs_with_pad_equal_to_eos(chat_rm):
    final_eval = [r for r in read_metrics(chat_rm / "metrics.jsonl") if r.get("final_eval")]
    assert final_eval and final_eval[-1]["eval_accuracy"] >= 0.8, final_eval


def test_ppo_on_conversational_prompts_keeps_prompts_as_written(tmp_path, tiny_argv, chat_model, chat_data, chat_rm):
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path,
        f"model_name={chat_model}",
        f"training.reward_model.checkpoint_path={chat_rm / 'final'}",
        f"data.path={chat_data / 'prompts.jsonl'}",
        "training.max_steps=3",
        "training.batch_size=8",
        "training.ppo.sample_every=1",
        "data.max_prompt_length=64",
        "data.eval_split=0.1",
        "training.ppo.eval_prompts=12",
    )
    assert main(argv) == 0
    history = read_metrics(tmp_path / "metrics.jsonl")
    # held-out prompts are sampled before the first step and after the last
    assert [r["step"] for r in history] == [0, 1, 2, 3, 3]
    assert "eval_reward_mean" in history[0] and "eval_reward_mean" in history[-1]
    assert history[1]["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    written = [json.loads(line)["prompt"] for line in (chat_data / "prompts.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["prompt"] in written and isinstance(s["response"], str) for s in samples)
    held_out = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in held_out] == [0] * 12 + [3] * 12


def test_ppo_reuses_an_sft_file_as_its_prompts(tmp_path, tiny_argv, chat_model, chat_data):
    argv = tiny_argv(
        "tiny_ppo.yml",
        tmp_path,
        f"model_name={chat_model}",
        "training.reward_model.checkpoint_path=",
        f"data.path={chat_data / 'sft.jsonl'}",
        "training.max_steps=1",
        "training.batch_size=4",
        "training.ppo.epochs=1",
    )
    assert main(argv) == 0


@pytest.mark.parametrize(("preset", "data_file"), [("tiny_sft.yml", "sft.jsonl"), ("tiny_dpo.yml", "preference.jsonl")])
def test_sft_and_dpo_run_on_conversational_rows(tmp_path, tiny_argv, chat_model, chat_data, preset, data_file):
    argv = tiny_argv(
        preset,
        tmp_path,
        f"model_name={chat_model}",
        f"data.path={chat_data / data_file}",
        "data.eval_path=null",
        "training.max_steps=4",
    )
    assert main(argv) == 0
    assert load_tokenizer(str(tmp_path / "final")).chat_template == CHAT_TEMPLATE


def test_conversational_rows_without_a_chat_template_are_exit_2(tmp_path, tiny_argv, chat_data, capsys):
    out = tmp_path / "out"
    argv = tiny_argv("tiny_sft.yml", out, f"data.path={chat_data / 'sft.jsonl'}", "data.eval_path=null")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conversational" in err[0] and "no chat template" in err[0] and "data.path" in err[0]
    assert not out.exists()
