"""Tokenization: the engine's two stages equal QEfficient's two tokenizer calls, and parallel
pieces give exactly the ids of one call (or the single call is taken)."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from spectrace.engines.base import BaseEngine
from spectrace.engines.tiktoken_bpe import LLAMA3_PATTERN as LLAMA3_SPLIT
from spectrace.engines.tokenizer import BOS, EOS, PAD, _parallel_backend, corpus_text, encode

# Cut candidates of every kind: spaces before and after newlines, blank lines, digits, punctuation,
# contractions, non-ASCII letters right after a newline.
TRICKY = "Ünïcode \nword\n\n  indented\n.dot\n123456 it's\n\t tab \n'quote'\n—dash\n\nend"


def _hf(pre_tokenizer, normalizer=None) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text() + TRICKY], trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


GPT2_STYLE = lambda: _hf(pre_tokenizers.ByteLevel(add_prefix_space=False))
LLAMA3_STYLE = lambda: _hf(pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))


def _long_text() -> str:
    return (corpus_text() + TRICKY) * 6


@pytest.mark.parametrize("make", [GPT2_STYLE, LLAMA3_STYLE], ids=["gpt2-regex", "llama3-split"])
@pytest.mark.parametrize("pieces", [2, 7, 200])
def test_parallel_pieces_give_the_ids_of_one_call(make, pieces):
    tok = make()
    assert _parallel_backend(tok) is not None  # the parallel path is the one under test
    text = _long_text()
    ids = encode(tok, text, min_chars=0, pieces=pieces)
    assert ids.dtype == np.int32 and ids.tolist() == list(tok(text)["input_ids"])
    assert encode(tok, TRICKY, min_chars=0, pieces=pieces).tolist() == list(tok(TRICKY)["input_ids"])


@pytest.mark.parametrize("make", [
    lambda: _hf(pre_tokenizers.ByteLevel(add_prefix_space=True)),      # each piece would gain a space
    lambda: _hf(pre_tokenizers.Whitespace()),                          # not byte-level
    lambda: _hf(pre_tokenizers.ByteLevel(add_prefix_space=False), normalizers.Lowercase()),
], ids=["prefix-space", "whitespace", "normalizer"])
def test_tokenizers_that_could_differ_take_one_call(make):
    tok = make()
    assert _parallel_backend(tok) is None
    text = _long_text()
    ids = encode(tok, text, min_chars=0, pieces=8)  # the single call
    assert ids.dtype == np.int32 and ids.tolist() == list(tok(text)["input_ids"])


def test_engine_tokenize_equals_qefficients_two_calls():
    engine = BaseEngine.from_pretrained("default-draft", prefill_seq_len=256, ctx_len=16384)
    text = _long_text()
    ids, positions, num_chunks = engine.tokenize(text)
    first = engine.tokenizer(text, padding=True, return_tensors="np")
    n = first["input_ids"].shape[1]
    assert num_chunks == -(n // -256)
    second = engine.tokenizer(text, padding="max_length", max_length=num_chunks * 256, return_tensors="np")
    np.testing.assert_array_equal(ids, second["input_ids"][0])
    mask = second["attention_mask"][0].astype(bool)
    np.testing.assert_array_equal(positions, np.where(mask, np.cumsum(mask) - 1, -1))
