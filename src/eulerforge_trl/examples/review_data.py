"""The review task's data: products, prompt and answer templates, and the seeded generators of every
file under `examples/data/chat/` (the rule they are built for is `reviews.review_reward`).

    python -m eulerforge_trl.examples.review_data examples/data/chat
"""

from __future__ import annotations

import random
import sys
from collections.abc import Sequence
from pathlib import Path

from . import write_jsonl_files
from .reviews import CATEGORY_WORDS, GENERIC_NEGATIVE, GENERIC_POSITIVE, MAX_WORDS, review_score, words_of

# (name, category): the name reads naturally after "the" in prompts and answers.
ITEMS: list[tuple[str, str]] = [
    ("coffee maker", "appliance"),
    ("electric kettle", "appliance"),
    ("toaster", "appliance"),
    ("blender", "appliance"),
    ("vacuum cleaner", "appliance"),
    ("desk lamp", "appliance"),
    ("bluetooth speaker", "appliance"),
    ("laptop", "appliance"),
    ("phone charger", "appliance"),
    ("microwave", "appliance"),
    ("electric toothbrush", "appliance"),
    ("red backpack", "gear"),
    ("winter jacket", "gear"),
    ("office chair", "gear"),
    ("umbrella", "gear"),
    ("suitcase", "gear"),
    ("mattress", "gear"),
    ("yoga mat", "gear"),
    ("water bottle", "gear"),
    ("sofa", "gear"),
    ("sleeping bag", "gear"),
    ("leather wallet", "gear"),
    ("hotel by the beach", "place"),
    ("Italian restaurant downtown", "place"),
    ("local gym", "place"),
    ("bakery on the corner", "place"),
    ("campsite by the lake", "place"),
    ("art museum", "place"),
    ("coffee shop near the station", "place"),
    ("public library", "place"),
    ("chocolate cake", "food"),
    ("pepperoni pizza", "food"),
    ("vegetable soup", "food"),
    ("chicken sandwich", "food"),
    ("apple pie", "food"),
    ("sushi platter", "food"),
    ("online cooking course", "service"),
    ("taxi ride to the airport", "service"),
    ("banking app", "service"),
    ("food delivery service", "service"),
    ("guided city tour", "service"),
    ("yoga class", "service"),
]
# Held out of every training file (sft, preference, prompts): one or two per category.
HELDOUT_ITEMS = [
    "bluetooth speaker",
    "microwave",
    "winter jacket",
    "sleeping bag",
    "art museum",
    "public library",
    "apple pie",
    "guided city tour",
]
TRAIN_ITEMS = [item for item in ITEMS if item[0] not in HELDOUT_ITEMS]
EVAL_ITEMS = [item for item in ITEMS if item[0] in HELDOUT_ITEMS]

PROMPT_TEMPLATES = [
    "Write a one-sentence review of the {item}.",
    "What do you think of the {item}? Answer in one sentence.",
    "Give a short opinion on the {item}.",
    "In one sentence, how would you rate the {item}?",
    "Describe your experience with the {item} in a single sentence.",
    "Could you write a quick review of the {item}?",
    "Share a brief review of the {item}.",
    "How was the {item}? Please keep it to one sentence.",
]
CATEGORY_PROMPT_TEMPLATES = {
    "appliance": ["Write a short review of the {item} you bought last month."],
    "gear": ["Write a short review of the {item} you bought last month."],
    "place": [
        "Give a short opinion on the {item} you visited.",
        "How was your visit to the {item}? One sentence, please.",
    ],
    "food": ["How did the {item} taste? Answer in one sentence."],
    "service": ["Write a one-sentence review of the {item} you tried."],
}

# Answer skeletons: the same skeleton takes any sentiment, so a pair differs in its words only.
RESPONSE_TEMPLATES = [
    "The {item} is {adjs}, and I {verdict}.",
    "I found the {item} {adjs}, so I {verdict}.",
    "Honestly, the {item} was {adjs}, and I {verdict}.",
    "Overall, the {item} was {adjs}, and I {verdict}.",
    "In short, the {item} is {adjs}; I {verdict}.",
    "The {item} turned out to be {adjs}, so I {verdict}.",
    "I think the {item} is {adjs} and I {verdict}.",
    "My verdict on the {item}: {adjs}, and I {verdict}.",
]
# Mixed/neutral answers without any lexicon word (score 0).
NEUTRAL_TEMPLATES = [
    "The {item} is okay, nothing special, and I {verdict}.",
    "I have no strong feelings about the {item}; I {verdict}.",
    "The {item} was fine, nothing more and nothing less, and I {verdict}.",
    "Honestly, the {item} was average, and I {verdict}.",
]
INTENSIFIERS = ["really", "very", "quite", "surprisingly", "incredibly"]
SOFTENERS = ["a bit", "rather", "somewhat", "slightly"]  # "great but a bit noisy"
CONCESSIONS = ["still", "otherwise", "at least"]  # "noisy but still great"
VERDICT_GROUP = {"appliance": "product", "gear": "product", "place": "place", "food": "food", "service": "service"}
VERDICTS: dict[str, dict[str, list[str]]] = {
    "product": {
        "positive": ["would buy it again", "use it every day", "would recommend it to anyone", "am glad I bought it"],
        "negative": [
            "would not buy it again",
            "regret buying it",
            "returned it within a week",
            "would warn my friends about it",
        ],
        "mixed": ["have mixed feelings about it", "might keep it for now", "am not sure I would buy it again"],
    },
    "place": {
        "positive": ["will definitely go back", "would recommend it to friends", "already plan another visit"],
        "negative": ["will not go back", "would tell friends to avoid it", "left earlier than planned"],
        "mixed": ["might go back someday", "have mixed feelings about it", "am not sure I will return"],
    },
    "food": {
        "positive": ["finished every bite", "would order it again", "already want another one"],
        "negative": ["left most of it on the plate", "would not order it again", "regret ordering it"],
        "mixed": ["might order it again", "ate about half of it", "have mixed feelings about it"],
    },
    "service": {
        "positive": ["would use it again", "would recommend it to anyone", "am glad I tried it"],
        "negative": ["would not use it again", "regret paying for it", "want my money back"],
        "mixed": ["might give it another try", "have mixed feelings about it", "am still undecided about it"],
    },
}
KINDS = ("positive", "negative", "mixed")

MAX_RESPONSE_WORDS = 20  # generated answers are 8-20 words


# --- generators -----------------------------------------------------------------------------


def make_prompt(rng: random.Random, item: tuple[str, str]) -> str:
    name, category = item
    return rng.choice(PROMPT_TEMPLATES + CATEGORY_PROMPT_TEMPLATES[category]).format(item=name)


def _join(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def make_adjectives(rng: random.Random, category: str, kind: str, n: int) -> str:
    """The adjective phrase of an answer: `n` same-sentiment words, or one of each for "mixed"."""
    pos, neg = CATEGORY_WORDS[category]
    if kind == "mixed":
        good = rng.choice(pos + GENERIC_POSITIVE)
        bad = rng.choice(neg + GENERIC_NEGATIVE)
        if rng.random() < 0.5:
            return f"{good} but {rng.choice(SOFTENERS)} {bad}"
        return f"{bad} but {rng.choice(CONCESSIONS)} {good}"
    specific, generic = (pos, GENERIC_POSITIVE) if kind == "positive" else (neg, GENERIC_NEGATIVE)
    # Mostly category words, sometimes one generic word, never a repeat.
    words = rng.sample(specific, min(n, len(specific)))
    if n > 1 and rng.random() < 0.4:
        words[rng.randrange(n)] = rng.choice(generic)
    phrase = _join(words)
    if rng.random() < 0.35:
        phrase = f"{rng.choice(INTENSIFIERS)} {phrase}"
    return phrase


def make_response(
    rng: random.Random,
    item: tuple[str, str],
    kind: str,
    n_adjectives: int | None = None,
    template: str | None = None,
    neutral: bool | None = None,
) -> str:
    """One answer of `kind` about `item`: a skeleton, an adjective phrase and a verdict.

    Redrawn (words and verdict, same skeleton) while it is longer than `MAX_RESPONSE_WORDS`.
    """
    for _ in range(20):
        text = _draw_response(rng, item, kind, n_adjectives, template, neutral)
        if len(words_of(text)) <= MAX_RESPONSE_WORDS:
            break
    return text


def _draw_response(
    rng: random.Random,
    item: tuple[str, str],
    kind: str,
    n_adjectives: int | None,
    template: str | None,
    neutral: bool | None,
) -> str:
    name, category = item
    verdict = rng.choice(VERDICTS[VERDICT_GROUP[category]][kind])
    if kind == "mixed" and (neutral if neutral is not None else rng.random() < 0.3):
        text = rng.choice(NEUTRAL_TEMPLATES).format(item=name, verdict=verdict)
    else:
        n = n_adjectives if n_adjectives is not None else rng.choices([1, 2, 3], weights=[2, 5, 3])[0]
        template = template or rng.choice(RESPONSE_TEMPLATES)
        text = template.format(item=name, adjs=make_adjectives(rng, category, kind, n), verdict=verdict)
    return text[0].upper() + text[1:]


def degenerate_response(rng: random.Random, item: tuple[str, str], good: str) -> str:
    """A spammy variant of a positive answer that the rule scores 0."""
    name, category = item
    pos = CATEGORY_WORDS[category][0] + GENERIC_POSITIVE
    word = rng.choice(pos)
    style = rng.randrange(3)
    if style == 0:  # the same word over and over
        return f"The {name} is {' '.join([word] * rng.randint(4, 8))}."
    if style == 1:  # a run-on list that never ends
        words = good.rstrip(".").split()
        while len(words) <= MAX_WORDS:
            words += ["and", rng.choice(pos)]
        return " ".join(words)
    # the answer trails off into one repeated word
    return f"{good.rstrip('.')} {' '.join([word] * rng.randint(3, 6))}"


def review_examples(rng: random.Random, n: int, items: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """`n` (prompt, response, kind) triples, kinds in equal thirds (shuffled)."""
    kinds = [KINDS[i % len(KINDS)] for i in range(n)]
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        item = rng.choice(items)
        out.append((make_prompt(rng, item), make_response(rng, item, kind), kind))
    return out


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def sft_rows(rng: random.Random, n: int, items: Sequence[tuple[str, str]] = TRAIN_ITEMS) -> list[dict]:
    return [{"messages": _user(p) + _assistant(r)} for p, r, _ in review_examples(rng, n, items)]


# (chosen kind, rejected kind, weight); "degenerate" is a spammy variant of the chosen answer.
PAIR_TYPES = [
    ("positive", "negative", 35),
    ("positive", "mixed", 25),
    ("mixed", "negative", 25),
    ("positive", "degenerate", 15),
]


def make_pair(rng: random.Random, item: tuple[str, str], better: str, worse: str) -> tuple[str, str]:
    """(chosen, rejected) about `item`, on the same skeleton where both have adjectives."""
    template = rng.choice(RESPONSE_TEMPLATES)
    n = rng.choices([1, 2, 3], weights=[2, 5, 3])[0]
    neutral = rng.random() < 0.3
    chosen = make_response(rng, item, better, n, template, neutral)
    if worse == "degenerate":
        return chosen, degenerate_response(rng, item, chosen)
    return chosen, make_response(rng, item, worse, n, template, neutral)


def preference_rows(rng: random.Random, n: int, items: Sequence[tuple[str, str]] = TRAIN_ITEMS) -> list[dict]:
    rows = []
    for _ in range(n):
        item = rng.choice(items)
        better, worse, _ = rng.choices(PAIR_TYPES, weights=[w for *_, w in PAIR_TYPES])[0]
        chosen, rejected = make_pair(rng, item, better, worse)
        rows.append(
            {"prompt": _user(make_prompt(rng, item)), "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        )
    return rows


def prompt_rows(rng: random.Random, n: int, items: Sequence[tuple[str, str]] = TRAIN_ITEMS) -> list[dict]:
    return [{"prompt": _user(make_prompt(rng, rng.choice(items)))} for _ in range(n)]


def unpaired_rows(rng: random.Random, n: int, items: Sequence[tuple[str, str]] = TRAIN_ITEMS) -> list[dict]:
    """KTO's rows {prompt, completion, label}: one answer each, desirable (label true) when `review_score`
    calls it positive; negative and mixed answers (about two thirds) are undesirable."""
    return [
        {"prompt": _user(p), "completion": _assistant(r), "label": review_score(r) > 0}
        for p, r, _ in review_examples(rng, n, items)
    ]


# file name -> (row builder, number of rows, items)
FILES = {
    "sft.jsonl": (sft_rows, 1200, TRAIN_ITEMS),
    "sft_eval.jsonl": (sft_rows, 100, EVAL_ITEMS),
    "preference.jsonl": (preference_rows, 1000, TRAIN_ITEMS),
    "preference_eval.jsonl": (preference_rows, 200, EVAL_ITEMS),
    "prompts.jsonl": (prompt_rows, 400, TRAIN_ITEMS),
    "prompts_eval.jsonl": (prompt_rows, 100, EVAL_ITEMS),
    "unpaired.jsonl": (unpaired_rows, 1000, TRAIN_ITEMS),
    "unpaired_eval.jsonl": (unpaired_rows, 100, EVAL_ITEMS),
}


def build_examples(seed: int = 0) -> dict[str, list[dict]]:
    """Every file's rows; each file has its own generator, seeded from `seed` and its name."""
    return {name: build(random.Random(f"{seed}:{name}"), n, items) for name, (build, n, items) in FILES.items()}


def write_chat_examples(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every example file under `out_dir`; the same seed gives the same bytes."""
    return write_jsonl_files(out_dir, build_examples(seed))


if __name__ == "__main__":
    for path in write_chat_examples(sys.argv[1] if len(sys.argv) > 1 else "examples/data/chat").values():
        print(f"wrote {path}")
