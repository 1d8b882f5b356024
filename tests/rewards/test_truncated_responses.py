"""A response cut at the length limit is scored as cut: no EOS, no end-of-turn tokens after it
(rendered as finished, the RM would read the policy's truncation as a chosen ending)."""

from __future__ import annotations

from eulerforge_trl.data.render import reward_ids
from eulerforge_trl.models.loading import load_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():
    tokenizer = load_tokenizer("tiny-qwen3.5")
    tokenizer.chat_template = CHATML
    return tokenizer


def test_plain_text_cut_response_gets_no_eos():
    tokenizer = _tokenizer()
    finished = reward_ids(tokenizer, "The cat", " sat on the")
    cut = reward_ids(tokenizer, "The cat", " sat on the", finished=False)
    assert finished[-1] == tokenizer.eos_token_id and cut == finished[:-1]


def test_conversation_cut_response_gets_no_closing_tokens():
    tokenizer = _tokenizer()
    prompt = [{"role": "user", "content": "Tell me about the cat."}]
    finished = reward_ids(tokenizer, prompt, "The cat sat")
    cut = reward_ids(tokenizer, prompt, "The cat sat", finished=False)
    opened = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    answer = tokenizer("The cat sat", add_special_tokens=False)["input_ids"]
    assert cut == list(opened["input_ids"]) + answer
    assert len(finished) > len(cut) and finished[: len(cut)] == cut  # the finished one adds the closing tokens


def test_ppo_hands_the_rm_which_responses_were_cut(tmp_path):
    import torch

    from eulerforge_trl.config import load_preset
    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    (tmp_path / "prompts.jsonl").write_text("".join(f'{{"prompt": "Tell me about cat {i}."}}\n' for i in range(8)))
    preset = load_preset(
        "tiny_ppo.yml",
        [
            "model_name=tiny-qwen3.5",
            "training.reward_model.checkpoint_path=",  # a random head: scores differ with the input
            f"data.path={tmp_path / 'prompts.jsonl'}",
            "training.batch_size=8",
            "training.report_to=[]",
            "training.ppo.max_gen_len=3",  # most responses are cut
        ],
        output_dir=str(tmp_path / "out"),
    )
    RunDir(tmp_path / "out").root.mkdir(parents=True)
    torch.manual_seed(0)
    trainer = PPOTrainer(preset, RunDir(tmp_path / "out"))
    seen = {}
    original = trainer.rewards.rm.score

    def spy(prompts, completions, batch_size, finished=None):
        seen["finished"] = finished
        return original(prompts, completions, batch_size, finished)

    trainer.rewards.rm.score = spy
    ids, mask, rows = trainer.prompt_batch(0)
    roll = trainer.scorer.sample(ids, mask)
    trainer.scorer.score(roll, [trainer.prompt_rows[i] for i in rows], trainer.step)
    assert seen["finished"] == roll.contains_eos.tolist() and not all(seen["finished"])
