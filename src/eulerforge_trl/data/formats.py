"""Chat formats people already have, turned into the rows TRL knows (message lists with role/content).

- ShareGPT: `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}], "system"?}`
  -> `{"messages": [...]}` (roles human -> user, gpt -> assistant, system kept); a message list
  anywhere (messages, prompt, chosen, ...) may use ShareGPT's `from`/`value` keys too.
- Alpaca: `{"instruction", "input"?, "output", "system"?}` -> `{"messages": [system?, user, assistant]}`
  (the user turn is the instruction, then a blank line and the input when there is one); prompts
  (`output` absent), preference pairs (`chosen`/`rejected` beside the instruction) and unpaired
  preferences (`output` and `label`: the output is the completion) likewise.
- TRL's implicit prompt: preference rows whose `chosen` and `rejected` are whole conversations
  sharing their first turns, without `prompt` -> the shared turns become the prompt.

`recognise(row, task, where)` applies whichever fits and drops the keys it consumed; any other key
stays (a reward function's column). Rows already in our shapes come back unchanged.
"""

from __future__ import annotations

from ..errors import DataError

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
}
# fields that may hold a message list
_MESSAGE_FIELDS = ("messages", "prompt", "response", "completion", "chosen", "rejected")


def recognise(row: dict, task: str, where: str) -> dict:
    """`row` in our shapes: ShareGPT and Alpaca rows converted, an implicit preference prompt split off."""
    row = dict(row)
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else None
    if "conversations" in row and "messages" not in row:
        messages = from_sharegpt(row.pop("conversations"), "conversations", where)
        if system and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        row.pop("system", None)
        row["messages"] = messages
    elif "instruction" in row and not any(f in row for f in ("prompt", "messages")):
        row = _from_alpaca(row, task, system, where)
    for name in _MESSAGE_FIELDS:
        if isinstance(row.get(name), list):
            row[name] = from_sharegpt(row[name], name, where)
    if task == "preference" and "prompt" not in row:
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if isinstance(chosen, list) and isinstance(rejected, list):
            row["prompt"], row["chosen"], row["rejected"] = split_shared_prefix(chosen, rejected, where)
    return row


def form_of(row: dict, task: str) -> str:
    """How a raw row is written, in words a message can use ("Alpaca rows (instruction, output)", ...).

    Alpaca and ShareGPT rows are read as message lists (`recognise`): a message about message lists
    names the format the user wrote instead.
    """
    if "conversations" in row and "messages" not in row:
        return "ShareGPT rows (conversations, read as message lists)"
    if "instruction" in row and not any(f in row for f in ("prompt", "messages")):
        fields = {
            "sft": "instruction, output",
            "preference": "instruction, chosen, rejected",
            "unpaired_preference": "instruction, output, label",
        }.get(task, "instruction")
        return f"Alpaca rows ({fields}, read as message lists)"
    if isinstance(row.get("messages"), list) or any(isinstance(row.get(f), list) for f in _MESSAGE_FIELDS):
        return "message lists"
    return "plain text"


def from_sharegpt(messages: list, name: str, where: str) -> list:
    """ShareGPT messages (`from`/`value`) as role/content messages (TRL's `maybe_convert_to_chatml`), their
    role names (human, gpt) as chat templates know them (`SHAREGPT_ROLES`); others are returned as they are."""
    if not isinstance(messages, list):
        raise DataError(f"{where}: field '{name}' must be a list of messages, got {type(messages).__name__}")
    sharegpt = [
        i for i, m in enumerate(messages) if isinstance(m, dict) and "role" not in m and {"from", "value"} <= m.keys()
    ]
    if not sharegpt:
        return messages
    from trl.data_utils import maybe_convert_to_chatml

    out = list(messages)
    renamed = maybe_convert_to_chatml({"messages": [dict(messages[i]) for i in sharegpt]})["messages"]
    for i, message in zip(sharegpt, renamed):
        role = message["role"]
        if not isinstance(role, str) or role not in SHAREGPT_ROLES:
            raise DataError(f"{where}: field '{name}'[{i}] has role '{role}'; known roles: {', '.join(SHAREGPT_ROLES)}")
        out[i] = {"role": SHAREGPT_ROLES[role], "content": message["content"]}
    return out


def _from_alpaca(row: dict, task: str, system: str | None, where: str) -> dict:
    instruction, extra = row.pop("instruction"), row.pop("input", None)
    row.pop("system", None)
    if not isinstance(instruction, str) or not (extra is None or isinstance(extra, str)):
        raise DataError(f"{where}: Alpaca fields 'instruction' and 'input' must be strings")
    text = f"{instruction}\n\n{extra}" if extra else instruction
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    output = row.pop("output", None)
    if task == "sft":
        if output is None:  # absent, or an empty cell of a CSV/parquet column (read as None)
            raise DataError(
                f"{where}: this Alpaca row (instruction, input, output) has no 'output', the response the sft "
                "task trains on: fill it in or drop the row"
            )
        if not isinstance(output, str):
            raise DataError(f"{where}: Alpaca field 'output' must be a string, got {type(output).__name__}")
        row["messages"] = [*prompt, {"role": "assistant", "content": output}]
        return row
    row["prompt"] = prompt
    if task == "unpaired_preference" and isinstance(output, str):
        row["completion"] = [{"role": "assistant", "content": output}]
    for name in ("chosen", "rejected"):
        if isinstance(row.get(name), str):
            row[name] = [{"role": "assistant", "content": row[name]}]
    return row


def split_shared_prefix(chosen: list, rejected: list, where: str) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) from two whole conversations: the prompt is their shared first turns
    (TRL's `extract_prompt`), ending before an assistant turn, so that each answer stays whole."""
    from trl.data_utils import extract_prompt

    n = len(extract_prompt({"chosen": chosen, "rejected": rejected})["prompt"]) if chosen and rejected else 0
    while n > 0 and isinstance(chosen[n - 1], dict) and chosen[n - 1].get("role") == "assistant":
        n -= 1
    if n == 0:
        raise DataError(
            f"{where}: 'chosen' and 'rejected' share no first turn to use as the prompt; give a 'prompt' field"
        )
    return chosen[:n], chosen[n:], rejected[n:]
