"""Tokenizers: loading a checkpoint's through ``transformers``, and the embedded one spectrace trains.

The embedded tokenizer is a byte-level BPE trained with the ``tokenizers`` library on the prose
bundled in ``engines/data/corpus.txt``, so the default model pair (and the random-weight presets)
work without any download. Training is deterministic: the same corpus gives the same file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|pad|>"
_VOCAB_TARGET = 2048  # the trainer stops earlier when the corpus has no more pairs to merge


def corpus_text() -> str:
    """The bundled English prose (a few KB), the tokenizer's training text and the demo prompts' source."""
    return resources.files("engines").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def train_embedded_tokenizer():
    """Train the embedded byte-level BPE; returns a ``tokenizers.Tokenizer`` that prepends BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_TARGET, special_tokens=[BOS, EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text()], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def save_embedded_tokenizer(path: str | Path) -> int:
    """Write the embedded tokenizer as Hugging Face tokenizer files into ``path``; returns its vocab size."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=train_embedded_tokenizer(), bos_token=BOS,
                                   eos_token=EOS, pad_token=PAD, padding_side="right")
    fast.save_pretrained(str(path))
    return len(fast)


def load_tokenizer(path: str | Path):
    """``AutoTokenizer`` from a checkpoint directory, set up for the engines' right padding.

    Llama tokenizers ship without a pad token; the EOS token stands in (padding never reaches
    attention: it has position -1).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json (or tokenizer.model "
                                "with tokenizer_config.json) next to config.json")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok
