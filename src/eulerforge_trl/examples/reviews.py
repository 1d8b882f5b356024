"""Deterministic conversational example data: short product reviews, and a reward for positive ones.

The classic RLHF sentiment demo, in TRL's conversational formats and natural English, small enough
that a weak pretrained chat model (e.g. SmolLM2-135M-Instruct) shows SFT -> reward model -> PPO
working in minutes on a CPU.

A user asks for a short review of a product, a place, a dish or a service ("Write a one-sentence
review of the coffee maker."); the assistant answers with one sentence (8-20 words) that names it
and carries a sentiment: positive, negative, or mixed/neutral. The SFT data is a mix (a third of
each kind) so the SFT policy samples all three and PPO has room to move towards positive. The
preference pairs contrast the same answer skeleton with different sentiment (chosen strictly
better by the rule below), plus a few well-formed positive answers against degenerate ones
(repetition, run-on, cut short), so a reward model learns sentiment, not length, and does not
reward spam.

The true objective, `review_reward` (TRL's reward-function signature), is a lexical rule:

* lowercase the answer and split it into words (``[a-z']+``);
* an empty answer, one with more than 40 words, or one with the same word 3+ times in a row is
  degenerate and scores 0;
* otherwise the score is (distinct words from `POSITIVE_WORDS`) - (distinct words from
  `NEGATIVE_WORDS`), clipped to [-3, 3].

By construction every generated positive answer scores 1..3, every negative one -3..-1 and every
mixed/neutral one 0. The rule ignores negation ("not great" counts as positive); the generated
answers never negate a lexicon word. Products in `HELDOUT_ITEMS` appear only in the evaluation
files (`*_eval.jsonl`), so "fresh prompts" really are fresh. This module is the rule and its
lexicon; the generators are in `review_data`. Regenerate the files with:

    python -m eulerforge_trl.examples.review_data examples/data/chat
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# Adjectives per category: each is in exactly one of the two lexicons below. A few generic words
# (great / awful, ...) fit every category.
GENERIC_POSITIVE = ["great", "excellent", "wonderful", "fantastic"]
GENERIC_NEGATIVE = ["awful", "terrible", "disappointing", "mediocre"]
CATEGORY_WORDS: dict[str, tuple[list[str], list[str]]] = {
    "appliance": (
        ["reliable", "quiet", "fast", "sturdy", "impressive", "sleek"],
        ["noisy", "slow", "flimsy", "faulty", "broken", "unreliable", "leaky", "overpriced"],
    ),
    "gear": (
        ["comfortable", "sturdy", "durable", "lightweight", "beautiful", "stylish"],
        ["uncomfortable", "flimsy", "broken", "ugly", "overpriced", "scratchy"],
    ),
    "place": (
        ["friendly", "clean", "cozy", "beautiful", "quiet", "charming", "spotless", "welcoming", "relaxing"],
        ["dirty", "noisy", "crowded", "rude", "cramped", "smelly", "boring", "overpriced"],
    ),
    "food": (
        ["delicious", "fresh", "tasty", "flavorful", "perfect"],
        ["bland", "stale", "soggy", "greasy", "burnt", "overpriced"],
    ),
    "service": (
        ["helpful", "fast", "reliable", "pleasant", "smooth"],
        ["slow", "confusing", "unreliable", "frustrating", "useless", "overpriced"],
    ),
}
# Common sentiment words the generated answers never use but a pretrained model writes freely
# ("amazing", "highly recommend"...): the rule judges sentiment, not the data's vocabulary.
OTHER_POSITIVE = [
    "amazing", "awesome", "incredible", "love", "loved", "lovely", "best", "superb", "outstanding",
    "delightful", "enjoyable", "impressed", "good", "nice", "happy", "pleased", "satisfied", "favorite",
    "brilliant", "terrific", "elegant", "gorgeous", "fabulous", "exceptional", "efficient", "handy",
    "useful", "convenient", "recommended", "enjoyed", "fun",
]  # fmt: skip
OTHER_NEGATIVE = [
    "bad", "poor", "horrible", "worst", "hate", "hated", "disappointed", "waste", "annoying", "dull",
    "gross", "disgusting", "nasty", "painful", "weak", "defective", "unhappy", "dissatisfied", "lousy",
    "subpar", "worse", "horrid", "dreadful", "unpleasant", "overrated",
]  # fmt: skip
POSITIVE_WORDS = frozenset(GENERIC_POSITIVE + OTHER_POSITIVE).union(*(pos for pos, _ in CATEGORY_WORDS.values()))
NEGATIVE_WORDS = frozenset(GENERIC_NEGATIVE + OTHER_NEGATIVE).union(*(neg for _, neg in CATEGORY_WORDS.values()))

MAX_WORDS = 40
MAX_RUN = 3  # this many equal words in a row makes an answer degenerate
SCORE_CLIP = 3
_WORD = re.compile(r"[a-z']+")


# --- the rule -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A completion as text: a string, or the assistant contents of a message list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    parts = []
    for message in value:
        if isinstance(message, str):
            parts.append(message)
            continue
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(content or "")
    return " ".join(parts)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_degenerate(text: Any) -> bool:
    """Empty, longer than `MAX_WORDS` words, or the same word `MAX_RUN`+ times in a row."""
    words = words_of(_text(text))
    if not words or len(words) > MAX_WORDS:
        return True
    return any(len(set(words[i : i + MAX_RUN])) == 1 for i in range(len(words) - MAX_RUN + 1))


def review_score(text: Any) -> int:
    """The rule for one answer (a string or a message list): see the module docstring."""
    text = _text(text)
    if is_degenerate(text):
        return 0
    words = set(words_of(text))
    score = len(words & POSITIVE_WORDS) - len(words & NEGATIVE_WORDS)
    return max(-SCORE_CLIP, min(SCORE_CLIP, score))


def sentiment_of(text: Any) -> str:
    """ "positive", "negative" or "mixed" by the sign of `review_score`."""
    score = review_score(text)
    return "positive" if score > 0 else "negative" if score < 0 else "mixed"


def is_positive(text: Any) -> bool:
    return review_score(text) > 0


def review_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward-function signature: one float per completion (strings or message lists).

    `prompts` and the dataset columns in `kwargs` are ignored; the score depends on the answer only.
    """
    return [float(review_score(c)) for c in completions]
