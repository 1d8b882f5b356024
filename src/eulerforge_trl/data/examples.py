"""Deterministic tiny example data with a learnable structure and a learnable preference.

Prompts ask about an animal in a place; a response names both and gives three adjectives.
Half of the adjectives are pleasant, half unpleasant: SFT learns the format and samples both
kinds, the RM learns "more pleasant adjectives is better" from pairs, and PPO can raise the
reward by choosing pleasant words. Regenerate with:

    python -m eulerforge_trl.data.examples examples/data
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

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


def make_response(rng: random.Random, animal: str, place: str, n_pleasant: int) -> str:
    words = rng.sample(PLEASANT, n_pleasant) + rng.sample(UNPLEASANT, N_ADJECTIVES - n_pleasant)
    rng.shuffle(words)
    return f" The {animal} in the {place} is {words[0]}, {words[1]} and {words[2]}."


def pleasant_count(text: str) -> int:
    """The hidden 'true reward' of the example task: how many pleasant adjectives a text uses."""
    return sum(1 for w in re.split(r"[^a-z]+", text.lower()) if w in PLEASANT)


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
        better = rng.randint(1, N_ADJECTIVES)
        worse = rng.randint(0, better - 1)
        rows.append(
            {
                "prompt": prompt,
                "chosen": make_response(rng, animal, place, better),
                "rejected": make_response(rng, animal, place, worse),
            }
        )
    return rows


def prompt_rows(rng: random.Random, n: int) -> list[dict]:
    return [{"prompt": make_prompt(rng)[0]} for _ in range(n)]


def write_examples(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every example file under `out_dir`; the same seed gives the same bytes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    files = {
        "sft.jsonl": sft_rows(rng, 2000),
        "sft_eval.jsonl": sft_rows(rng, 100),
        "preference.jsonl": preference_rows(rng, 1500),
        "preference_eval.jsonl": preference_rows(rng, 200),
        "prompts.jsonl": prompt_rows(rng, 512),
    }
    written = {}
    for name, rows in files.items():
        path = out / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        written[name] = path
    return written


if __name__ == "__main__":
    for path in write_examples(sys.argv[1] if len(sys.argv) > 1 else "examples/data").values():
        print(f"wrote {path}")
