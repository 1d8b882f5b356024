"""The RM stage end to end on the tiny model, and the RewardHead that PPO scores with.

The shared run (`tiny_rm_run` in conftest.py) trains presets/tiny_rm.yml on the shared tiny SFT
model. The equivalence tests check that the scores PPO will read through `RewardScorer` (RM
adapter beside the policy's adapter, left padding) are the scores the trained RM gave inside
TRL's RewardTrainer (sequence classifier, right padding).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from eulerforge_trl.errors import ModelError
from eulerforge_trl.models.fingerprint import base_identity
from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.models.reward_files import HEAD_FILE, META_FILE
from eulerforge_trl.models.scorer import RewardScorer, load_reward_model, score
from eulerforge_trl.rundir import FINAL_MARKER, read_metrics

N_ROWS = 8  # preference rows scored in the equivalence tests (16 texts of several lengths)
ATOL = 1e-4


def _policy_on(base):
    """A peft policy model on `base`, as PPO builds it: one LoRA adapter named "policy"."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), adapter_name="policy")


@pytest.fixture(scope="module")
def preference_rows(example_data) -> list[dict]:
    lines = (example_data / "preference_eval.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:N_ROWS]]


@pytest.fixture(scope="module")
def texts(preference_rows, tiny_sft_final) -> list[str]:
    """prompt + chosen + EOS, then prompt + rejected + EOS: what RewardTrainer tokenizes."""
    eos = load_tokenizer(str(tiny_sft_final)).eos_token
    return [r["prompt"] + r["chosen"] + eos for r in preference_rows] + [
        r["prompt"] + r["rejected"] + eos for r in preference_rows
    ]


@pytest.fixture(scope="module")
def trainer_scores(tiny_sft_final, tiny_rm_final, texts) -> torch.Tensor:
    """[2 * N_ROWS] scores of the trained RM rebuilt as RewardTrainer evaluated it (right padding)."""
    from peft import PeftModel

    from eulerforge_trl.models.reward_files import load_reward_head
    from eulerforge_trl.models.reward_head import sequence_classifier_on

    sft = str(tiny_sft_final)
    tokenizer = load_tokenizer(sft)
    assert tokenizer.padding_side == "right"
    classifier = sequence_classifier_on(load_causal_lm(sft), sft, load_reward_head(str(tiny_rm_final)))
    model = PeftModel.from_pretrained(classifier, str(tiny_rm_final)).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any(), "texts of one length would not test padding"
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1).float()


# ------------------------------------------------------------------------------ the stage itself


def test_rm_run_learns_the_preference(tiny_rm_run):
    """Training loss falls from log 2 and the held-out accuracy of final/ (last line) is >= 0.9."""
    records = read_metrics(tiny_rm_run / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert train, "no training lines in metrics.jsonl"
    assert all({"step", "loss", "accuracy", "margin"} <= r.keys() for r in train)
    assert train[0]["loss"] == pytest.approx(0.693, abs=0.05)  # an untrained head scores pairs alike
    assert sum(r["loss"] for r in train[-3:]) / 3 < 0.45  # last logged losses (batch-to-batch noise)
    assert train[-1]["margin"] > train[0]["margin"]

    final = records[-1]
    assert final.get("final_eval") is True
    assert final["eval_rows"] == 200  # every row of examples/data/preference_eval.jsonl
    assert final["eval_accuracy"] >= 0.9
    assert final["eval_margin"] > 0
    assert (tiny_rm_run / "preset.yml").is_file()
    assert (tiny_rm_run / "training_curves.png").is_file()


def test_rm_final_holds_adapter_head_and_base_identity(tiny_rm_final, tiny_sft_final):
    """final/ has the LoRA adapter, the head and reward_meta.json identifying the SFT base."""
    for name in ("adapter_config.json", "adapter_model.safetensors", HEAD_FILE, META_FILE, FINAL_MARKER):
        assert (tiny_rm_final / name).is_file(), f"final/ lacks {name}"
    assert not (tiny_rm_final / "config.json").exists(), "the RM final/ must hold an adapter, not a full model"

    adapter = json.loads((tiny_rm_final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_sft_final)

    meta = json.loads((tiny_rm_final / META_FILE).read_text())
    base = load_causal_lm(str(tiny_sft_final))
    assert meta == base_identity(base, str(tiny_sft_final))
    assert meta["model_type"] == "qwen3_5_text"
    assert (meta["hidden_size"], meta["vocab_size"]) == (128, 512)
    assert len(meta["fingerprint"]) == 16

    head = torch.load(tiny_rm_final / HEAD_FILE, weights_only=True)
    assert head["linear.weight"].shape == (1, 128)
    assert json.loads((tiny_rm_final / FINAL_MARKER).read_text())["stage"] == "rm"


def test_rm_final_saves_the_head_once(tiny_rm_final):
    """The head is `HEAD_FILE` alone: the adapter holds the LoRA layers, not a second copy as peft's `score`."""
    from safetensors.torch import load_file

    adapter = load_file(tiny_rm_final / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter), [n for n in adapter if "lora_" not in n]
    assert not json.loads((tiny_rm_final / "adapter_config.json").read_text()).get("modules_to_save")


# ------------------------------------------------------------------ scores agree with the trainer


def test_reward_scorer_on_policy_matches_trainer_scores(tiny_sft_final, tiny_rm_final, texts, trainer_scores):
    """RM adapter attached beside a policy adapter, LEFT-padded input: same scores as RewardTrainer's model."""
    sft = str(tiny_sft_final)
    tokenizer = load_tokenizer(sft)
    tokenizer.padding_side = "left"
    policy = _policy_on(load_causal_lm(sft, tokenizer=tokenizer))
    scorer = RewardScorer.attach(policy, str(tiny_rm_final), model_name=sft)
    policy.train()  # as inside a PPO step; scoring must run in eval mode and restore this

    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"][:, 0] == 0).any(), "expected left padding on the shorter texts"
    scores = scorer.score_ids(batch["input_ids"], batch["attention_mask"])

    assert scores.shape == (len(texts),)
    torch.testing.assert_close(scores, trainer_scores, atol=ATOL, rtol=0)
    # scoring must hand the model back as it found it: policy adapter active, mode unchanged,
    # the policy's LoRA trainable and the RM's frozen (PPO's optimizer must never move the RM)
    assert policy.active_adapter == "policy"
    assert policy.training
    grads = {(".policy." in n, p.requires_grad) for n, p in policy.named_parameters() if "lora_" in n}
    assert grads == {(True, True), (False, False)}, grads


def test_trained_rm_prefers_chosen_on_these_rows(trainer_scores):
    """The scores compared above are meaningful: the RM ranks chosen over rejected on the sample."""
    chosen, rejected = trainer_scores[:N_ROWS], trainer_scores[N_ROWS:]
    assert (chosen > rejected).float().mean() >= 0.75


def test_public_score_function_matches_trainer_scores(tiny_rm_final, preference_rows, trainer_scores):
    """`load_reward_model` + `score(prompts, responses)` (EOS added for the caller) gives the same numbers."""
    scorer, tokenizer = load_reward_model(str(tiny_rm_final))
    prompts = [r["prompt"] for r in preference_rows] * 2
    responses = [r["chosen"] for r in preference_rows] + [r["rejected"] for r in preference_rows]
    scores = score(scorer, tokenizer, prompts, responses, batch_size=5)  # several batches, ragged last one
    torch.testing.assert_close(torch.tensor(scores), trainer_scores, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------- same-base rule


def test_attach_to_base_of_other_hidden_size_is_a_model_error(tiny_rm_final):
    """A head cannot apply to another width: ModelError naming both hidden sizes."""
    from transformers import AutoModelForCausalLM

    from eulerforge_trl.models.tiny import VOCAB_SIZE, tiny_config

    config = tiny_config(VOCAB_SIZE)
    config.hidden_size = 64
    config.intermediate_size = 192
    narrow = _policy_on(AutoModelForCausalLM.from_config(config))

    with pytest.raises(ModelError) as info:
        RewardScorer.attach(narrow, str(tiny_rm_final), model_name="narrow-base")
    message = str(info.value)
    assert "hidden_size=128" in message and "hidden_size=64" in message
    assert str(tiny_rm_final) in message


def test_attach_to_same_shaped_base_with_other_weights_warns_with_fingerprints(tiny_rm_final, caplog):
    """Same shapes, other weights (the untrained tiny model): a warning naming both fingerprints."""
    from eulerforge_trl.config import TINY_MODEL_NAME

    base = load_causal_lm(TINY_MODEL_NAME)
    theirs = base_identity(base, TINY_MODEL_NAME)["fingerprint"]
    ours = json.loads((tiny_rm_final / META_FILE).read_text())["fingerprint"]
    assert theirs != ours

    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.models.fingerprint"):
        scorer = RewardScorer.attach(_policy_on(base), str(tiny_rm_final), model_name=TINY_MODEL_NAME)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(ours in w and theirs in w for w in warnings), warnings
    assert scorer.adapter_name == "reward"  # a warning, not a refusal


def test_attach_to_matching_base_does_not_warn(tiny_sft_final, tiny_rm_final, caplog):
    """The right base gives no fingerprint warning (so the warning above means something)."""
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.models"):
        RewardScorer.attach(_policy_on(load_causal_lm(str(tiny_sft_final))), str(tiny_rm_final), str(tiny_sft_final))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_empty_checkpoint_path_gives_random_head_with_loud_warning(tiny_sft_final, caplog):
    """checkpoint_path="" scores with a random head on the policy's base, and says so."""
    sft = str(tiny_sft_final)
    tokenizer = load_tokenizer(sft)
    policy = _policy_on(load_causal_lm(sft, tokenizer=tokenizer))
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.models.scorer"):
        scorer = RewardScorer.attach(policy, "", model_name=sft)
    assert any("RANDOM" in r.getMessage() and "checkpoint_path" in r.getMessage() for r in caplog.records)
    assert scorer.adapter_name is None

    batch = tokenizer(
        ["Describe the cat near the park.\nAnswer: The cat<|endoftext|>", "Hi"], return_tensors="pt", padding=True
    )
    scores = scorer.score_ids(batch["input_ids"], batch["attention_mask"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_attach_to_a_directory_that_is_not_an_rm_is_a_model_error(tiny_sft_final):
    """Pointing checkpoint_path at the SFT final/ (a common slip) names the files an RM has."""
    sft = str(tiny_sft_final)
    with pytest.raises(ModelError, match=f"{HEAD_FILE}.*{META_FILE}"):
        RewardScorer.attach(_policy_on(load_causal_lm(sft)), sft, model_name=sft)
