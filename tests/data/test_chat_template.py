"""The preset's `chat_template`: chat data on a model without a template of its own (the tiny one).

The built-in tiny-qwen3.5 has no chat template, so conversational, ShareGPT and Alpaca rows are
refused on it; with `chat_template` (a Jinja file or the template itself) every stage renders them
with that template, final/ keeps it, `evaluate --chat-template` samples with it, and the stop
tokens at the end of a turn are the template's. A missing file or a Jinja error is one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eulerforge_trl import cli
from eulerforge_trl.config import TINY_MODEL_NAME, load_preset
from eulerforge_trl.data.render import stop_token_ids
from eulerforge_trl.errors import PresetError
from eulerforge_trl.models.loading import load_tokenizer
from eulerforge_trl.train import main

REPO = Path(__file__).resolve().parents[2]
SIMPLE = "examples/chat_templates/simple.jinja"  # relative: found from any directory (the package's copy)
N_ROWS = 8


@pytest.fixture(scope="module")
def chat_rows(tmp_path_factory, example_data) -> dict[str, Path]:
    """A few rows of the chat example task in each form: message lists, ShareGPT, Alpaca; and prompts."""
    out = tmp_path_factory.mktemp("chat_template_rows")
    lines = (example_data / "chat" / "sft.jsonl").read_text(encoding="utf-8").splitlines()[:N_ROWS]
    conversations = [json.loads(line)["messages"] for line in lines]
    forms = {
        "messages": [{"messages": c} for c in conversations],
        "sharegpt": [
            {
                "conversations": [
                    {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in c
                ]
            }
            for c in conversations
        ],
        "alpaca": [{"instruction": c[0]["content"], "output": c[1]["content"]} for c in conversations],
        "prompts": [{"prompt": c[:1]} for c in conversations],
    }
    files = {}
    for name, rows in forms.items():
        files[name] = out / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return files


def _template_text() -> str:
    return (REPO / SIMPLE).read_text(encoding="utf-8")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("form", ["messages", "sharegpt", "alpaca"])
def test_sft_on_chat_rows_trains_on_the_tiny_model_and_final_keeps_the_template(
    form, chat_rows, tiny_argv, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the relative template path is found without a checkout
    out = tmp_path / "sft"
    argv = tiny_argv(
        "tiny_sft.yml",
        out,
        f"chat_template={SIMPLE}",
        f"data.path={chat_rows[form]}",
        "data.eval_path=null",
        "training.max_steps=1",
        "training.batch_size=4",
    )
    assert main(argv) == 0
    assert (out / "final" / "chat_template.jinja").read_text(encoding="utf-8") == _template_text()
    assert load_tokenizer(str(out / "final")).chat_template == _template_text()


def test_chat_rows_without_a_template_name_the_chat_template_key(chat_rows, tiny_argv, tmp_path, capsys):
    out = tmp_path / "sft"
    argv = tiny_argv("tiny_sft.yml", out, f"data.path={chat_rows['sharegpt']}", "data.eval_path=null")
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "no chat template" in line and "set chat_template" in line and "ShareGPT" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "chat_template: no file"),
        ("\n", "chat_template: bad.jinja is empty"),
        ("{% for m in messages %}{{ m['content'] }}", "chat_template (bad.jinja): not a valid Jinja template: line 1"),
    ],
)
def test_a_missing_or_broken_template_file_is_one_line_and_exit_2(
    content, expected, chat_rows, tiny_argv, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "bad.jinja").write_text(content, encoding="utf-8")
    out = tmp_path / "sft"
    argv = tiny_argv("tiny_sft.yml", out, "chat_template=bad.jinja", f"data.path={chat_rows['messages']}")
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert expected in line and "tiny_sft.yml" in line
    assert not out.exists()


def test_a_template_in_the_preset_or_beside_it(tmp_path, monkeypatch):
    """The template itself as a YAML block; a file named relative to the preset's folder."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "mine.jinja").write_text(_template_text(), encoding="utf-8")
    (folder / "file.yml").write_text("data:\n  path: x.jsonl\nchat_template: mine.jinja\n", encoding="utf-8")
    inline = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    (folder / "inline.yml").write_text(f"data:\n  path: x.jsonl\nchat_template: |\n  {inline}\n", encoding="utf-8")
    assert load_preset(folder / "file.yml").chat_template == str((folder / "mine.jinja").resolve())
    assert load_preset(folder / "inline.yml").chat_template.strip() == inline
    (folder / "broken.yml").write_text("data:\n  path: x.jsonl\nchat_template: |\n  {{ oops\n", encoding="utf-8")
    with pytest.raises(PresetError, match=r"broken\.yml:3: chat_template: not a valid Jinja template"):
        load_preset(folder / "broken.yml")
    with pytest.raises(PresetError, match=r"file\.yml: chat_template: .*presets is a directory"):
        load_preset(folder / "file.yml", [f"chat_template={folder}"])


def test_stop_tokens_follow_the_template():
    """A turn closed by another special token (here the tiny tokenizer's pad) makes that token a stop."""
    closed_by_pad = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|pad|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    tokenizer = load_tokenizer(TINY_MODEL_NAME, closed_by_pad)
    assert stop_token_ids(tokenizer, conversational=True) == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    simple = load_tokenizer(TINY_MODEL_NAME, str(REPO / SIMPLE))
    assert stop_token_ids(simple, conversational=True) == [simple.eos_token_id]


def test_ppo_renders_chat_prompts_with_the_template(chat_rows, tiny_argv, tmp_path):
    out = tmp_path / "ppo"
    argv = tiny_argv(
        "tiny_ppo.yml",
        out,
        f"model_name={TINY_MODEL_NAME}",
        "training.reward_model.checkpoint_path=",  # the random head: the rendering is what is checked
        f"chat_template={REPO / SIMPLE}",
        f"data.path={chat_rows['prompts']}",
        "training.max_steps=1",
        "training.batch_size=4",
        "training.ppo.epochs=1",
        "training.ppo.num_mini_batches=1",
        "training.ppo.max_gen_len=4",
    )
    assert main(argv) == 0
    assert load_tokenizer(str(out / "final")).chat_template == _template_text()


def test_evaluate_takes_a_chat_template(chat_rows, tmp_path, capsys):
    def evaluate(*extra: str) -> int:
        argv = ["evaluate", "--models", TINY_MODEL_NAME, "--prompts", str(chat_rows["prompts"])]
        return cli.main([*argv, "--max-prompts", "2", "--max-new-tokens", "4", "--output", str(tmp_path), *extra])

    assert evaluate() == 2
    assert "set --chat-template" in _one_error_line(capsys)
    assert evaluate("--chat-template", str(tmp_path / "nope.jinja")) == 2
    assert _one_error_line(capsys).startswith("error: --chat-template: no file")
    assert evaluate("--chat-template", SIMPLE) == 0
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(samples) == 2 and isinstance(samples[0]["prompt"], list)
