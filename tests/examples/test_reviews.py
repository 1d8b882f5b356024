"""The conversational review task: deterministic files, the reward rule, and the data's structure."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eulerforge_trl.examples import review_data, reviews

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "examples" / "data" / "chat"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return review_data.write_chat_examples(tmp_path_factory.mktemp("chat"))


@pytest.fixture(scope="module")
def rows(files: dict[str, Path]) -> dict[str, list[dict]]:
    return {name: _rows(path) for name, path in files.items()}


def test_files_regenerate_deterministically(files: dict[str, Path], tmp_path: Path) -> None:
    again = review_data.write_chat_examples(tmp_path)
    assert sorted(again) == sorted(files) == sorted(review_data.FILES)
    for name, path in files.items():
        assert again[name].read_bytes() == path.read_bytes(), name
        assert path.stat().st_size < 1_000_000, name
    assert (
        review_data.write_chat_examples(tmp_path / "other", seed=1)["sft.jsonl"].read_bytes()
        != files["sft.jsonl"].read_bytes()
    )


def test_shipped_files_are_up_to_date(files: dict[str, Path]) -> None:
    for name, path in files.items():
        assert (SHIPPED / name).read_bytes() == path.read_bytes(), f"regenerate {SHIPPED}/{name}"


def test_row_formats(rows: dict[str, list[dict]]) -> None:
    for name, (_, n, _) in review_data.FILES.items():
        assert len(rows[name]) == n, name
    for row in rows["sft.jsonl"] + rows["sft_eval.jsonl"]:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert 8 <= len(reviews.words_of(row["messages"][1]["content"])) <= 20
    for row in rows["preference.jsonl"] + rows["preference_eval.jsonl"]:
        assert sorted(row) == ["chosen", "prompt", "rejected"]
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
    for row in rows["prompts.jsonl"] + rows["prompts_eval.jsonl"]:
        assert list(row) == ["prompt"] and [m["role"] for m in row["prompt"]] == ["user"]


@pytest.mark.parametrize("name", ["preference.jsonl", "preference_eval.jsonl"])
def test_chosen_beats_rejected_by_the_rule(rows: dict[str, list[dict]], name: str) -> None:
    pairs = rows[name]
    chosen = reviews.review_reward([r["prompt"] for r in pairs], [r["chosen"] for r in pairs])
    rejected = reviews.review_reward([r["prompt"] for r in pairs], [r["rejected"] for r in pairs])
    assert all(c > r for c, r in zip(chosen, rejected))
    # Most pairs differ in sentiment only; a few contrast a positive answer with spam.
    degenerate = sum(reviews.is_degenerate(r["rejected"]) for r in pairs)
    assert 0 < degenerate < len(pairs) / 4
    kinds = {(reviews.sentiment_of(r["chosen"]), reviews.sentiment_of(r["rejected"])) for r in pairs}
    assert {("positive", "negative"), ("positive", "mixed"), ("mixed", "negative")} <= kinds


def test_review_reward_accepts_strings_and_messages() -> None:
    text = "The coffee maker is reliable and quiet, and I would buy it again."
    messages = [{"role": "assistant", "content": text}]
    prompt = [{"role": "user", "content": "Write a one-sentence review of the coffee maker."}]
    assert reviews.review_reward([prompt[0]["content"], prompt], [text, messages]) == [2.0, 2.0]
    assert reviews.review_reward(None, [text], completion_ids=[[1, 2]]) == [2.0]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
    assert reviews.review_score(parts) == 2
    assert reviews.review_reward([prompt], ["The toaster is broken, noisy and awful; I regret buying it."]) == [-3.0]
    assert reviews.review_reward([prompt], ["The toaster is great but a bit noisy."]) == [0.0]
    # distinct words, case-insensitive, clipped
    assert reviews.review_score("GREAT, great and Great toaster.") == 1
    assert reviews.review_score("A great, excellent, wonderful, fantastic and reliable toaster.") == 3
    assert reviews.is_positive(text) and not reviews.is_positive("The toaster is okay.")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        [],
        [{"role": "assistant", "content": ""}],
        "The coffee maker is great great great.",
        "great excellent excellent excellent wonderful",
        "The coffee maker is " + " and ".join(["great", "excellent", "reliable", "sturdy"] * 6) + ".",
    ],
)
def test_degenerate_answers_score_zero(text: object) -> None:
    assert reviews.is_degenerate(text)
    assert reviews.review_reward(None, [text]) == [0.0]


def test_sft_mix_has_all_three_sentiments(rows: dict[str, list[dict]]) -> None:
    counts = {kind: 0 for kind in review_data.KINDS}
    for row in rows["sft.jsonl"]:
        counts[reviews.sentiment_of(row["messages"])] += 1
    assert all(abs(n - len(rows["sft.jsonl"]) / 3) <= 1 for n in counts.values()), counts


def test_each_kind_scores_as_labelled() -> None:
    for _, response, kind in review_data.review_examples(random.Random(3), 600, review_data.ITEMS):
        assert reviews.sentiment_of(response) == kind, response
        assert not reviews.is_degenerate(response)


def test_fixed_text_uses_no_lexicon_word() -> None:
    fixed = [
        *review_data.PROMPT_TEMPLATES,
        *review_data.RESPONSE_TEMPLATES,
        *review_data.NEUTRAL_TEMPLATES,
        *review_data.INTENSIFIERS,
    ]
    fixed += [*review_data.SOFTENERS, *review_data.CONCESSIONS, *(name for name, _ in review_data.ITEMS)]
    fixed += [t for ts in review_data.CATEGORY_PROMPT_TEMPLATES.values() for t in ts]
    fixed += [v for group in review_data.VERDICTS.values() for vs in group.values() for v in vs]
    assert not set(reviews.words_of(" ".join(fixed))) & (reviews.POSITIVE_WORDS | reviews.NEGATIVE_WORDS)
    assert not reviews.POSITIVE_WORDS & reviews.NEGATIVE_WORDS


def _items_in(rows: list[dict]) -> set[str]:
    text = json.dumps(rows)
    return {name for name, _ in review_data.ITEMS if f"the {name}" in text}


def test_eval_products_are_held_out(rows: dict[str, list[dict]]) -> None:
    train = _items_in(rows["sft.jsonl"] + rows["preference.jsonl"] + rows["prompts.jsonl"])
    held_out = set(review_data.HELDOUT_ITEMS)
    assert _items_in(rows["prompts_eval.jsonl"]) == held_out
    assert not train & held_out
    assert train == {name for name, _ in review_data.TRAIN_ITEMS}
