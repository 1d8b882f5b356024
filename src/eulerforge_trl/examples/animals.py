"""The tiny model's example task (animals): deterministic data with a learnable structure and preference.

Prompts ask about an animal in a place; a response names both and gives three adjectives.
Half of the adjectives are pleasant, half unpleasant: SFT learns the format and samples both
kinds, the RM learns "well-formed beats malformed, then more pleasant adjectives is better" from
pairs, and PPO can raise the reward by choosing pleasant words while keeping the format.
`pleasant_score` is that rule written down (one row at a time), so tests can check what PPO really
learned; `pleasant_score_judge` and `well_formed` are judges with TRL's reward-function signature.
Regenerate with:

    python -m eulerforge_trl.examples.animals examples/data
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from . import write_jsonl_files

ANIMALS = ["cat", "dog", "bird", "fox", "bear", "fish", "owl", "frog", "horse", "mouse", "wolf", "duck"]
PLACES = ["park", "forest", "river", "garden", "city", "farm", "lake", "hill", "field", "house"]
PLEASANT = ["happy", "bright", "kind", "calm", "warm", "gentle", "joyful", "sweet"]
UNPLEASANT = ["sad", "dark", "angry", "cold", "rude", "gloomy", "bitter", "grim"]
PROMPT_TEMPLATES = [
    "Tell me about the {animal} in the {place}.\nAnswer:",
    "Describe the {animal} near the {place}.\nAnswer:",
    "What is the {animal} at the {place} like?\nAnswer:",
]
N_ADJECTIVES = 3


def make_prompt(rng: random.Random) -> tuple[str, str, str]:
    animal, place = rng.choice(ANIMALS), rng.choice(PLACES)
    return rng.choice(PROMPT_TEMPLATES).format(animal=animal, place=place), animal, place


def pick_adjectives(rng: random.Random, n_pleasant: int) -> list[str]:
    words = rng.sample(PLEASANT, n_pleasant) + rng.sample(UNPLEASANT, N_ADJECTIVES - n_pleasant)
    rng.shuffle(words)
    return words


def make_response(rng: random.Random, animal: str, place: str, n_pleasant: int, words: list[str] | None = None) -> str:
    words = words or pick_adjectives(rng, n_pleasant)
    return f" The {animal} in the {place} is {words[0]}, {words[1]} and {words[2]}."


def corrupt_response(rng: random.Random, animal: str, place: str, words: list[str]) -> str:
    """The same adjectives in a malformed answer: the pair differs in form only."""
    best = max(words, key=lambda w: w in PLEASANT)
    kind = rng.randrange(6)
    if kind == 0:  # the subject is missing
        return f" The in the {place} is {words[0]}, {words[1]} and {words[2]}."
    if kind == 1:  # the adjectives are missing
        return f" The {animal} in the {place} is."
    if kind == 2:  # cut short
        return f" The {animal} is {words[0]}"
    if kind == 3:  # the sentence structure is gone
        return f" {words[0]} {words[1]} {words[2]} {place} {animal}."
    if kind == 4:  # trailing junk
        return f" The {animal} in the {place} is {words[0]}, {words[1]} and {words[2]}. {best} {place} {best}"
    # a run-on list that never ends
    return f" The {animal} in the {place} is {words[0]}, {words[1]} and {words[2]} and {best} and {words[0]} and"


def pleasant_score(prompt: str, response: str) -> int:
    """The rule behind the preference data: -1 for a malformed answer, else its pleasant adjectives."""
    match = re.search(r"the (\w+) (?:in|near|at) the (\w+)", prompt)
    found = re.fullmatch(r" The (\w+) in the (\w+) is (\w+), (\w+) and (\w+)\.", response.strip("\n").rstrip())
    if not match or not found or found.group(1, 2) != match.group(1, 2):
        return -1
    adjectives = found.group(3, 4, 5)
    if not all(a in PLEASANT + UNPLEASANT for a in adjectives):
        return -1
    return sum(a in PLEASANT for a in adjectives)


# The same rule as judges with TRL's reward-function signature, for `eulerforge evaluate --judge`.


def pleasant_score_judge(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    """`pleasant_score` per completion: -1 for a malformed answer, else its number of pleasant adjectives (0-3)."""
    return [float(pleasant_score(p, c)) for p, c in zip(prompts, completions)]


def well_formed(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    """1.0 for a well-formed answer, 0.0 for a malformed one: its mean is the share of well-formed answers.

    `eulerforge evaluate ... --judge eulerforge_trl.examples.animals:well_formed` shows the tiny
    pipeline's reward hacking: the RM's reward rises after PPO while this share falls.
    """
    return [float(pleasant_score(p, c) >= 0) for p, c in zip(prompts, completions)]


def pleasant_words(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
    """Pleasant adjectives minus unpleasant ones anywhere in each completion, the form ignored: a reward
    that even the random built-in model's babble moves, unlike `pleasant_score_judge` (-1 for it all)."""
    words = [c.replace(",", " ").replace(".", " ").split() for c in completions]
    return [float(sum(w in PLEASANT for w in ws) - sum(w in UNPLEASANT for w in ws)) for ws in words]


def sft_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        prompt, animal, place = make_prompt(rng)
        n_pleasant = sum(rng.random() < 0.5 for _ in range(N_ADJECTIVES))
        rows.append({"prompt": prompt, "response": make_response(rng, animal, place, n_pleasant)})
    return rows


def preference_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        prompt, animal, place = make_prompt(rng)
        if rng.random() < 0.35:  # form: a well-formed answer beats the same words malformed
            words = pick_adjectives(rng, rng.randint(0, N_ADJECTIVES))
            chosen = make_response(rng, animal, place, 0, words)
            rejected = corrupt_response(rng, animal, place, words)
        else:  # content: more pleasant adjectives is better
            better = rng.randint(1, N_ADJECTIVES)
            chosen = make_response(rng, animal, place, better)
            rejected = make_response(rng, animal, place, rng.randint(0, better - 1))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def prompt_rows(rng: random.Random, n: int) -> list[dict]:
    return [{"prompt": make_prompt(rng)[0]} for _ in range(n)]


def unpaired_rows(rng: random.Random, n: int) -> list[dict]:
    """KTO's rows {prompt, completion, label}: one answer each, desirable (label true) when
    `pleasant_score` is 2 or 3, undesirable when it has at most one pleasant adjective or is malformed;
    about half of each."""
    rows = []
    for _ in range(n):
        prompt, animal, place = make_prompt(rng)
        desirable = rng.random() < 0.5
        if desirable:
            completion = make_response(rng, animal, place, rng.randint(2, N_ADJECTIVES))
        elif rng.random() < 0.3:  # form: the right words, malformed
            completion = corrupt_response(rng, animal, place, pick_adjectives(rng, rng.randint(0, N_ADJECTIVES)))
        else:  # content: well-formed, but at most one pleasant adjective
            completion = make_response(rng, animal, place, rng.randint(0, 1))
        rows.append({"prompt": prompt, "completion": completion, "label": desirable})
    return rows


def write_examples(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every example file under `out_dir`; the same seed gives the same bytes."""
    rng = random.Random(seed)
    files = {
        "sft.jsonl": sft_rows(rng, 2000),
        "sft_eval.jsonl": sft_rows(rng, 100),
        "preference.jsonl": preference_rows(rng, 1500),
        "preference_eval.jsonl": preference_rows(rng, 200),
        "prompts.jsonl": prompt_rows(rng, 512),
        # drawn last, so the files above keep their bytes
        "unpaired.jsonl": unpaired_rows(rng, 1000),
        "unpaired_eval.jsonl": unpaired_rows(rng, 100),
    }
    return write_jsonl_files(out_dir, files)


if __name__ == "__main__":
    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "examples/data").values():
        print(f"wrote {path}")
