"""Rows -> token ids, rendered the way TRL renders them, shared by training and PPO scoring.

One function per use, so that what a model learned on is exactly what it later reads:
- `prompt_ids`: a prompt as the policy continues it (chat template + generation prompt for message
  lists; the text itself otherwise), as TRL's SFT and DPO render prompts;
- `conversation_ids`: a whole conversation and the mask of its assistant turns (multi-turn SFT);
- `reward_ids`: prompt + completion as the RM reads it, as TRL's `RewardTrainer` renders it (the
  whole conversation through the chat template; plain text with EOS appended). The RM stage
  tokenizes its pairs with it and PPO scores its samples with it.
"""

from __future__ import annotations

import re

from trl.data_utils import is_conversational

from ..errors import DataError

# `{% generation %}` ... `{% endgeneration %}` (with whitespace control) marks assistant text in a template
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def require_chat_template(
    tokenizer, rows: list[dict], model_name: str, key: str = "data.path", setting: str = "chat_template"
) -> None:
    """Message-list rows need a chat template (the tokenizer's own or the one `setting` gives it); say so
    in one line when there is none."""
    if rows and is_conversational(rows[0]) and not getattr(tokenizer, "chat_template", None):
        form = getattr(rows, "form", "message lists")  # `jsonl.Rows`: the format the source was written in
        form = "conversational (message lists)" if form == "message lists" else form
        raise DataError(
            f"{key}: the rows are {form} but the tokenizer of {model_name} has no chat template; set {setting} "
            "(a Jinja file such as examples/chat_templates/simple.jinja), use a chat model's tokenizer or give "
            "the rows as plain text"
        )


def prompt_ids(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt, ending where the model's answer starts."""
    if is_conversational({"prompt": prompt}):
        return list(
            tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
    return list(tokenizer(prompt)["input_ids"])


def stop_token_ids(tokenizer, conversational: bool) -> list[int]:
    """The tokens that end an answer: EOS, and for conversations the template's end-of-turn token.

    Chat templates close an assistant turn with their own token (Qwen's `<|im_end|>`, Llama 3's
    `<|eot_id|>`), which is not always the tokenizer's EOS (Qwen base models: `<|endoftext|>`).
    It is found by rendering a probe answer: the first special token after the answer's start.
    """
    stops = [tokenizer.eos_token_id]
    if conversational:
        probe = [{"role": "user", "content": "?"}]
        start = len(prompt_ids(tokenizer, probe))
        rendered = reward_ids(tokenizer, probe, [{"role": "assistant", "content": "ok"}])
        special = set(tokenizer.all_special_ids)
        end_of_turn = next((t for t in rendered[start:] if t in special), None)
        if end_of_turn is not None and end_of_turn not in stops:
            stops.append(end_of_turn)
    return stops


def as_completion(prompt, response):
    """A response as a completion of `prompt`'s kind: an assistant message for a conversation."""
    if is_conversational({"prompt": prompt}) and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def reward_ids(tokenizer, prompt, completion, finished: bool = True) -> list[int]:
    """Token ids the reward model reads for (prompt, completion); its score is read at the last one.

    `finished=False`: the response was cut at the length limit. It is rendered as cut, with no EOS
    and no end-of-turn tokens after it: rendered as a finished answer, the RM would score a
    truncated response as if the policy had chosen to stop there.
    """
    completion = as_completion(prompt, completion)
    if is_conversational({"prompt": prompt}):
        if not finished:
            opened = tokenizer.apply_chat_template(
                list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            text = "".join(str(m.get("content", "")) for m in completion)
            return list(opened) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
        rendered = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True, return_dict=True)
        return list(rendered["input_ids"])
    if finished and not completion.endswith(tokenizer.eos_token):
        completion = completion + tokenizer.eos_token
    return list(tokenizer(prompt + completion)["input_ids"])


def reward_batch(tokenizer, prompts: list, completions: list, device=None, finished: list[bool] | None = None):
    """`reward_ids` for a batch, padded: (input_ids [B, T], attention_mask [B, T]); padding is what the mask says.

    `finished`: per row, whether the response ended with a stop token (None: all did)."""
    finished = finished if finished is not None else [True] * len(prompts)
    ids = [reward_ids(tokenizer, p, c, done) for p, c, done in zip(prompts, completions, finished)]
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def conversation_ids(tokenizer, messages: list[dict], chat_template: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and its loss mask: 1 on every assistant turn, 0 elsewhere.

    A template with `{% generation %}` markers gives the mask itself (TRL's `assistant_only_loss`).
    Any other template: assistant turn i spans from the end of `messages[:i]` rendered with the
    generation prompt to the end of `messages[:i+1]` rendered (its end-of-turn token included, so
    the model learns to stop). The last turn's start is where its prompt and the whole rendering
    first differ, as TRL finds a completion's start. Earlier turns need a template that renders
    them the same with or without later turns ("prefix-preserving"); one that does not (Qwen3,
    Qwen3.5, Phi-3: the last assistant turn is rendered differently) is a DataError: pass a
    prefix-preserving `chat_template` instead (TRL's `get_training_chat_template` has them).

    Args:
        chat_template: renders instead of the tokenizer's own template.

    Returns:
        (input_ids [T], mask [T]): the ids `apply_chat_template(messages, tokenize=True)` gives.
    """
    template = chat_template or tokenizer.chat_template
    if isinstance(template, str) and _GENERATION_MARKER.search(template):
        out = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["input_ids"]), list(out["assistant_masks"])

    def text(part: list[dict], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(
            part, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
        )

    full = text(messages)
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    spans = []
    for i in turns:
        before = text(messages[:i], generation_prompt=True) if i else ""
        if i == turns[-1]:
            spans.append((_common_prefix_length(before, full), len(full)))
            continue
        through = text(messages[: i + 1])
        if not (full.startswith(before) and full.startswith(through)):
            raise DataError(
                "the chat template renders an earlier assistant turn differently once later turns follow, so "
                "its tokens cannot be located for the loss; set data.assistant_turns=last to train the final "
                "answer only"
            )
        spans.append((len(before), len(through)))
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        starts = [start for start, _ in encoded["offset_mapping"]]
        ids = list(encoded["input_ids"])
        mask = [int(any(a <= s < b for a, b in spans)) for s in starts]
        return ids, mask
    # no character offsets: count the tokens of each boundary's prefix (exact unless tokens merge across it)
    ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
    mask = [0] * len(ids)
    for a, b in spans:
        first, stop = (len(tokenizer(full[:pos], add_special_tokens=False)["input_ids"]) for pos in (a, b))
        mask[first:stop] = [1] * (stop - first)
    return ids, mask


def _common_prefix_length(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


__all__ = [
    "as_completion",
    "conversation_ids",
    "stop_token_ids",
    "prompt_ids",
    "require_chat_template",
    "reward_batch",
    "reward_ids",
]
