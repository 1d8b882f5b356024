"""Multi-turn SFT: every assistant turn carries the loss, no user or system token does.

On the tiny built-in tokenizer with two chat templates: a plain ChatML one and SmolLM2-135M-Instruct's
(ChatML with a default system line, written out here: no model is downloaded). The masks are checked
token by token against the decoded text, then through TRL's `SFTTrainer` (its `labels`), and
single-turn rows are checked to get exactly the labels TRL's own prompt/completion path gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eulerforge_trl.config import TINY_MODEL_NAME, load_preset
from eulerforge_trl.data.render import conversation_ids
from eulerforge_trl.errors import DataError
from eulerforge_trl.models.loading import load_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# SmolLM2-135M-Instruct's template (tokenizer_config.json): ChatML plus a default system turn
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# renders the final assistant turn unlike earlier ones (as Qwen3's drops earlier reasoning)
NOT_PREFIX_PRESERVING = (
    "{% for m in messages %}{{ m['role'] }}: "
    "{% if loop.last and m['role'] == 'assistant' %}[final] {% endif %}{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is the cat?"},
    {"role": "assistant", "content": "On the mat."},
    {"role": "user", "content": "And the dog?"},
    {"role": "assistant", "content": "In the garden."},
]


@pytest.fixture(scope="module")
def base_tokenizer():
    return load_tokenizer(TINY_MODEL_NAME)


def _with_template(tokenizer, template):
    tokenizer.chat_template = template
    return tokenizer


def _spans(tokenizer, ids, mask) -> tuple[list[str], list[str]]:
    """The decoded runs of trained (mask 1) and untrained (mask 0) tokens, in order."""
    runs: list[tuple[int, list[int]]] = []
    for token, bit in zip(ids, mask):
        if runs and runs[-1][0] == bit:
            runs[-1][1].append(token)
        else:
            runs.append((bit, [token]))
    trained = [tokenizer.decode(t) for bit, t in runs if bit]
    untrained = [tokenizer.decode(t) for bit, t in runs if not bit]
    return trained, untrained


@pytest.mark.parametrize("template", [CHATML, SMOLLM2], ids=["chatml", "smollm2"])
def test_every_assistant_turn_is_trained_and_nothing_else(base_tokenizer, template):
    tokenizer = _with_template(base_tokenizer, template)
    ids, mask = conversation_ids(tokenizer, CONVERSATION)
    assert ids == tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    trained, untrained = _spans(tokenizer, ids, mask)
    # each answer with its end-of-turn token (the model learns to stop), nothing of the user or system
    assert trained == ["On the mat.<|im_end|>\n", "In the garden.<|im_end|>\n"]
    assert "Where is the cat?" in untrained[0] and "Be brief." in untrained[0]
    assert "And the dog?" in untrained[1] and untrained[1].endswith("assistant\n")


def test_the_default_system_turn_of_smollm2_is_not_trained(base_tokenizer):
    tokenizer = _with_template(base_tokenizer, SMOLLM2)
    ids, mask = conversation_ids(tokenizer, CONVERSATION[1:])
    trained, untrained = _spans(tokenizer, ids, mask)
    assert trained == ["On the mat.<|im_end|>\n", "In the garden.<|im_end|>\n"]
    assert untrained[0].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_a_template_that_is_not_prefix_preserving_points_at_assistant_turns_last(base_tokenizer):
    tokenizer = _with_template(base_tokenizer, NOT_PREFIX_PRESERVING)
    with pytest.raises(DataError, match=r"data.assistant_turns=last"):
        conversation_ids(tokenizer, CONVERSATION)
    ids, mask = conversation_ids(tokenizer, CONVERSATION[:3])  # one answer: its start is where the renders differ
    (trained,) = _spans(tokenizer, ids, mask)[0]
    assert trained.endswith("] On the mat.\n") and "cat" not in trained  # " [" merges across the boundary


def _trl_template(name: str) -> str:
    """A chat template as TRL ships it (trl/chat_templates/<name>.jinja: the model's own, verbatim)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["qwen3_5_nothink", "qwen3", "phi3"])
def test_templates_that_render_the_last_turn_differently_use_trls_training_version(base_tokenizer, name):
    """Qwen3.5's template adds an empty think block to the last assistant turn only: the sft stage
    then renders with TRL's prefix-preserving training template, whose generation markers give the mask."""
    from eulerforge_trl.trainers.sft import _conversation_ids

    tokenizer = _with_template(base_tokenizer, _trl_template(name))
    with pytest.raises(DataError):
        conversation_ids(tokenizer, CONVERSATION)
    ((ids, mask),) = _conversation_ids(tokenizer, [CONVERSATION], "qwen")
    trained, untrained = _spans(tokenizer, ids, mask)
    assert len(trained) == 2 and "On the mat." in trained[0] and "In the garden." in trained[1]
    assert not any(word in "".join(trained) for word in ("cat", "dog", "brief"))
    assert "Where is the cat?" in untrained[0] and "And the dog?" in untrained[1]


def test_generation_markers_give_the_mask(base_tokenizer):
    tokenizer = _with_template(base_tokenizer, _trl_template("qwen3_5_nothink_training"))
    ids, mask = conversation_ids(tokenizer, CONVERSATION)
    trained, _ = _spans(tokenizer, ids, mask)
    assert trained == [f"<think>\n\n</think>\n\n{a}<|im_end|>\n" for a in ("On the mat.", "In the garden.")]


def test_a_template_trl_cannot_patch_is_one_line_naming_the_model(base_tokenizer):
    from eulerforge_trl.trainers.sft import _conversation_ids

    tokenizer = _with_template(base_tokenizer, NOT_PREFIX_PRESERVING)
    with pytest.raises(DataError, match=r"^my-model: the chat template renders an earlier .*assistant_turns=last"):
        _conversation_ids(tokenizer, [CONVERSATION], "my-model")


# ---------------------------------------------------------------------------------- through TRL


def _trl_labels(tmp_path, base_tokenizer, rows: list[dict], *overrides: str) -> list[list[int]]:
    """`labels` of the training set `SFTTrainer` builds from `rows` as the sft stage hands them over."""
    from trl import SFTTrainer

    from eulerforge_trl.models.loading import load_causal_lm
    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers.sft import sft_datasets, to_sft_config

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    preset = load_preset(None, [f"data.path={path}", "training.report_to=[]", "training.max_steps=1", *overrides])
    tokenizer = _with_template(base_tokenizer, CHATML)
    train, _ = sft_datasets(preset, tokenizer)
    trainer = SFTTrainer(
        model=load_causal_lm(TINY_MODEL_NAME, tokenizer=tokenizer),
        args=to_sft_config(preset, RunDir(tmp_path / "run"), False, tokenizer),
        train_dataset=train,
        processing_class=tokenizer,
    )
    return [list(row) for row in trainer.train_dataset["labels"]]


def test_sft_trainer_labels_cover_each_assistant_turn(tmp_path, base_tokenizer):
    labels = _trl_labels(tmp_path, base_tokenizer, [{"messages": CONVERSATION}])[0]
    tokenizer = _with_template(base_tokenizer, CHATML)
    ids, mask = conversation_ids(tokenizer, CONVERSATION)
    assert labels == [token if bit else -100 for token, bit in zip(ids, mask)]
    trained, _ = _spans(tokenizer, ids, [int(label != -100) for label in labels])
    assert trained == ["On the mat.<|im_end|>\n", "In the garden.<|im_end|>\n"]
    # with assistant_turns=last only the final answer is trained, as before
    last = _trl_labels(tmp_path, base_tokenizer, [{"messages": CONVERSATION}], "data.assistant_turns=last")[0]
    assert _spans(tokenizer, ids, [int(label != -100) for label in last])[0] == ["In the garden.<|im_end|>\n"]


def test_single_turn_rows_get_the_labels_of_trls_prompt_completion_path(tmp_path, base_tokenizer):
    rows = [{"messages": CONVERSATION[:3]}, {"messages": [CONVERSATION[1], CONVERSATION[4]]}]
    ours = _trl_labels(tmp_path, base_tokenizer, rows)
    trl_own = _trl_labels(tmp_path, base_tokenizer, rows, "data.assistant_turns=last")
    assert ours == trl_own


def test_sft_stage_trains_a_sharegpt_parquet_file_end_to_end(tmp_path, base_tokenizer, capsys):
    """`train.main` on multi-turn ShareGPT rows in parquet under another column name, evaluated on a split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eulerforge_trl.models.loading import load_causal_lm
    from eulerforge_trl.rundir import read_metrics
    from eulerforge_trl.train import main

    model_dir = tmp_path / "chat_model"
    tokenizer = _with_template(base_tokenizer, CHATML)
    load_causal_lm(TINY_MODEL_NAME, tokenizer=tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    dialog = [{"from": names[m["role"]], "value": m["content"]} for m in CONVERSATION]
    pq.write_table(pa.Table.from_pylist([{"dialog": dialog, "id": i} for i in range(6)]), tmp_path / "chats.parquet")
    argv = [
        "tiny_sft.yml",
        "--output-dir",
        str(tmp_path / "out"),
        "--set",
        f"model_name={model_dir}",
        "--set",
        f"data.path={tmp_path / 'chats.parquet'}",
        "--set",
        "data.split=train[:4]",
        "--set",
        "data.columns.dialog=conversations",
        "--set",
        f"data.eval_path={tmp_path / 'chats.parquet'}",
        "--set",
        "data.eval_path_split=train[4:]",
        "--set",
        "data.max_length=256",
        "--set",
        "training.max_steps=2",
        "--set",
        "training.batch_size=2",
        "--set",
        "training.save_steps=2",
        "--set",
        "training.report_to=[]",
    ]
    short = [*argv, "--set", "data.max_length=64", "--output-dir", str(tmp_path / "short")]
    assert main(short) == 2  # no answer starts within 64 tokens
    assert "raise data.max_length" in capsys.readouterr().err
    assert main(argv) == 0
    records = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert any("loss" in r for r in records) and any("eval_loss" in r for r in records)
