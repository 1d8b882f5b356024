"""The embedded default model `tiny-qwen3.5`: Qwen3.5 text architecture, built from config.

No model hub is needed: the tokenizer (a small byte-level BPE) ships in the package and the
weights are a seeded random init, so every machine builds the same model. Its SFT stage is full
fine-tuning (LoRA cannot teach a random base), after which RM and PPO run on LoRA as on a real
model. Rebuild the tokenizer files with `python -m eulerforge_trl.models.tiny`.
"""

from __future__ import annotations

import random
from pathlib import Path

TOKENIZER_DIR = Path(__file__).with_name("tiny_tokenizer")
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
VOCAB_SIZE = 512
INIT_SEED = 1234


def tiny_config(vocab_size: int):
    """A 4-layer, hidden-128 `qwen3_5_text` config: DeltaNet and full attention alternate."""
    from transformers import Qwen3_5TextConfig

    tok = load_tiny_tokenizer()
    return Qwen3_5TextConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        layer_types=["linear_attention", "full_attention"] * 2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        linear_num_key_heads=4,
        linear_num_value_heads=4,
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )


def load_tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def build_tiny_model(dtype=None):
    """The seeded random-init tiny causal LM (same weights on every machine, RNG state untouched)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = load_tiny_tokenizer()
    config = tiny_config(len(tok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def build_tiny_tokenizer(out_dir: Path = TOKENIZER_DIR) -> None:
    """Train the byte-level BPE on the example task's text plus generic English, and save it.

    Byte-level means any UTF-8 text tokenizes (no unknown tokens), so the tiny model also runs on
    user data; the example words just come out as single tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ..examples import animals

    rng = random.Random(0)
    corpus = [r["prompt"] + r["response"] for r in animals.sft_rows(rng, 3000)]
    corpus += [GENERIC_TEXT] * 3
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, model_max_length=512
    )
    fast.save_pretrained(out_dir)


GENERIC_TEXT = (
    "The quick brown fox jumps over the lazy dog. Please write a short answer to the question. "
    "What is the best way to learn? Summarize the text in one sentence. Thank you, that is good. "
    "Yes no maybe this that these those there here when where why how which who what because. "
    "Question: Answer: User: Assistant: 0 1 2 3 4 5 6 7 8 9 10 100 + - * / = ( ) [ ] { } ! ? , . ;"
)

if __name__ == "__main__":
    build_tiny_tokenizer()
    print(f"wrote {TOKENIZER_DIR}")
