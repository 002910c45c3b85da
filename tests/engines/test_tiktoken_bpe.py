"""tiktoken runs a rank-defined tokenizer with exactly ``tokenizers``' ids, and only such a one.

The property is checked on generated text (derandomized Hypothesis): runs of the corpus with
characters swapped in, random strings over tricky whitespace, digits, apostrophes and added
tokens, and concatenations of the vocabulary's own tokens (which put the pairs that could merge
differently next to each other), for both pre-tokenizer regexes in use.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from spectrace.engines import tiktoken_bpe
from spectrace.engines.tiktoken_bpe import LLAMA3_PATTERN
from spectrace.engines.tokenizer import (BOS, EOS, PAD, _parallel_backend, corpus_text, encode,
                                         train_embedded_tokenizer)

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "spectrace-hypothesis"))
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow])

ODD = list(" \n\t\r\x0b\x0c\x1c\x1f\x85\xa0\u2003\u3000'’\"0123456789éÜ東京—…🙂") + [
    BOS, PAD, "'s", "'LL", "\r\n", "  ", "<|", "|>"]


# Whitespace around newlines, so that the vocabulary has tokens such as "\n\n" and " \r\n": where a
# cut can go wrong (engines.tokenizer._cut_points), a merge would show it.
LINES = "".join(f"{w}{ws}\n{after}" for w in corpus_text().split()[:300]
                for ws in ("", " ", "\t", " \r", "\n") for after in ("", " "))


def _trained(pre_tokenizer, vocab_size=700) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text(), LINES], trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 0)])
    return tok


GPT2_PRE = pre_tokenizers.ByteLevel(add_prefix_space=False)


def _llama3_pre(pattern=LLAMA3_PATTERN):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


BACKENDS = {"embedded": train_embedded_tokenizer,
            "gpt2-lines": lambda: tiktoken_bpe.to_rank_form(_trained(GPT2_PRE)),
            "llama3-lines": lambda: tiktoken_bpe.to_rank_form(_trained(_llama3_pre()))}


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request):
    return BACKENDS[request.param]()


def _vocab_strings(backend) -> list[str]:
    """The ordinary tokens as text (those that are whole UTF-8)."""
    out = []
    for tok in tiktoken_bpe._ordinary_vocab(json.loads(backend.to_str())):
        try:
            out.append(bytes(tiktoken_bpe._BYTE_OF[c] for c in tok).decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return out


def _same(backend, text):
    fast = tiktoken_bpe.encoder(backend)
    assert fast is not None
    assert fast.encode(text) == backend.encode(text, add_special_tokens=False).ids, repr(text)


def _corpus_with_swaps(data) -> str:
    corpus = corpus_text()
    start = data.draw(st.integers(0, len(corpus) - 1))
    chars = list(corpus[start:start + data.draw(st.integers(1, 120))])
    for _ in range(data.draw(st.integers(0, 6))):
        chars.insert(data.draw(st.integers(0, len(chars))), data.draw(st.sampled_from(ODD)))
    return "".join(chars)


@FUZZ
@given(data=st.data())
def test_corpus_with_odd_characters(backend, data):
    _same(backend, _corpus_with_swaps(data))


@FUZZ
@given(text=st.lists(st.sampled_from(ODD + list("abcdefghij ,.;")), max_size=40).map("".join))
def test_random_strings(backend, text):
    _same(backend, text)


@FUZZ
@given(data=st.data())
def test_concatenated_tokens(backend, data):
    strings = _vocab_strings(backend)
    _same(backend, "".join(data.draw(st.lists(st.sampled_from(strings), min_size=2, max_size=6))))


def _fast(backend, **kw) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, **kw)


@FUZZ
@given(lines=st.lists(st.tuples(st.sampled_from(["", "x", "word", "it's", "12", "—", BOS]),
                                st.sampled_from(["", " ", "\t", " \r", "\n", "\n ", "  "])),
                      min_size=2, max_size=40),
       pieces=st.integers(2, 16))
def test_cut_pieces_give_the_ids_of_one_call(backend, lines, pieces):
    """Through ``encode``'s cuts, on tiktoken and on tokenizers' batch (the trained form)."""
    text = "".join(f"{w}{ws}\n" for w, ws in lines)
    for tok in (_fast(backend), _fast(_trained(backend.pre_tokenizer))):
        assert encode(tok, text, min_chars=0, pieces=pieces).tolist() == list(tok(text)["input_ids"]), repr(text)


def test_engine_encode_takes_tiktoken_with_the_same_ids(backend):
    tok = _fast(backend)
    assert tiktoken_bpe.encoder(tok.backend_tokenizer) is not None
    assert _parallel_backend(tok)[1].fast is not None  # the path encode takes
    text = ("\n".join([corpus_text()] * 5) + f"\nan added token {PAD} inside\n") * 2
    for pieces in (1, 2, 7, 64):
        ids = encode(tok, text, min_chars=0, pieces=pieces)
        assert ids.dtype == np.int32 and ids.tolist() == list(tok(text)["input_ids"])
    assert encode(tok, "x").tolist() == list(tok("x")["input_ids"])


def _doc(backend, edit) -> dict:
    doc = json.loads(backend.to_str())
    edit(doc)
    return doc


def test_only_rank_defined_tokenizers_qualify():
    rank = train_embedded_tokenizer()
    assert tiktoken_bpe.rank_defined_reason(json.loads(rank.to_str())) is None
    trained = _trained(GPT2_PRE)
    assert "ignore_merges" in tiktoken_bpe.rank_defined_reason(json.loads(trained.to_str()))
    with_ignore = _doc(trained, lambda d: d["model"].update(ignore_merges=True))  # one rule per token
    assert "split" in tiktoken_bpe.rank_defined_reason(with_ignore)
    cases = {
        "normalizer": lambda d: d.update(normalizer={"type": "Lowercase"}),
        "prefix space": lambda d: d["pre_tokenizer"].update(add_prefix_space=True),
        "dropout": lambda d: d["model"].update(dropout=0.1),
        "strips": lambda d: d["added_tokens"][0].update(lstrip=True),
        "prefix of another": lambda d: d["added_tokens"].append({**d["added_tokens"][0], "id": 99999,
                                                                 "content": BOS + "x"}),
        "a rule missing": lambda d: d["model"].update(merges=d["model"]["merges"][:-1]),
        "rules out of order": lambda d: d["model"].update(merges=d["model"]["merges"][::-1]),
        "not BPE": lambda d: d["model"].update(type="WordPiece"),
        "mixed normalized": lambda d: d["added_tokens"][0].update(
            normalized=not d["added_tokens"][1]["normalized"]),
        "newline token": lambda d: d["added_tokens"][0].update(content="<|\n|>"),
    }
    for name, edit in cases.items():
        assert tiktoken_bpe.rank_defined_reason(_doc(rank, edit)) is not None, name
    lowercase = Tokenizer.from_str(rank.to_str())
    lowercase.normalizer = normalizers.Lowercase()
    assert tiktoken_bpe.encoder(lowercase) is None


def test_without_tiktoken_the_same_ids_come_from_tokenizers(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken now raises ImportError
    backend = train_embedded_tokenizer()
    assert tiktoken_bpe.encoder(backend) is None
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    text = "\n".join([corpus_text()] * 3)
    assert encode(tok, text, min_chars=0, pieces=4).tolist() == list(tok(text)["input_ids"])


def test_the_switch_turns_the_path_off(monkeypatch):
    monkeypatch.setenv("SPECTRACE_TIKTOKEN", "0")
    assert tiktoken_bpe.encoder(train_embedded_tokenizer()) is None
    monkeypatch.setenv("SPECTRACE_TIKTOKEN", "1")
    assert tiktoken_bpe.encoder(train_embedded_tokenizer()) is not None


def test_an_unknown_split_regex_keeps_tokenizers_path():
    """A Split regex that leaves characters out keeps them in tokenizers (tiktoken would drop them)."""
    backend = tiktoken_bpe.to_rank_form(_trained(_llama3_pre(r"\p{L}+")))
    assert "pre-tokenizer" in tiktoken_bpe.rank_defined_reason(json.loads(backend.to_str()))
    tok = _fast(backend)
    text = "ab 12!! cd\nef gh\n" * 50
    assert encode(tok, text, min_chars=0, pieces=4).tolist() == list(tok(text)["input_ids"])


CHANGES = {  # each made to a loaded tokenizer after a first call took tiktoken's path
    "added token already in the vocabulary": lambda tok: tok.add_tokens([AddedToken("er", special=True,
                                                                                     normalized=False)]),
    "added token": lambda tok: tok.add_tokens(["zzyzx"]),
    "post-processor": lambda tok: setattr(tok.backend_tokenizer, "post_processor",
                                          processors.TemplateProcessing(single="$A")),
    "normalizer": lambda tok: setattr(tok.backend_tokenizer, "normalizer", normalizers.Lowercase()),
    # reaches the backend only inside transformers' next call
    "split_special_tokens": lambda tok: setattr(tok, "split_special_tokens", True),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changes_to_a_loaded_tokenizer_are_followed(change):
    tok = _fast(train_embedded_tokenizer())
    text = "\n".join([corpus_text()] * 2) + "\nzzyzx and <|pad|> after\nz"

    def same():
        assert encode(tok, text, min_chars=0, pieces=3).tolist() == list(tok(text)["input_ids"])

    same()
    assert tiktoken_bpe.encoder(tok.backend_tokenizer) is not None
    CHANGES[change](tok)
    same()
    if change == "split_special_tokens":  # and back: the backend keeps True until transformers' next call
        tok.split_special_tokens = False
        same()
        same()


def test_padding_left_on_the_backend_and_lone_surrogates():
    for backend in (train_embedded_tokenizer(), _trained(GPT2_PRE)):
        tok = _fast(backend)
        text = "\n".join([corpus_text()] * 2)
        expected = list(tok(text)["input_ids"])
        assert encode(tok, text, min_chars=0, pieces=3).tolist() == expected
        tok("short", padding="max_length", max_length=4096)  # leaves padding set on the backend
        assert encode(tok, text, min_chars=0, pieces=3).tolist() == expected
        for call in (lambda t: encode(tok, t, min_chars=0, pieces=2), lambda t: tok(t)["input_ids"]):
            with pytest.raises(TypeError):               # what tokenizers does with one
                call("a lone \ud800 surrogate\nhere")


def test_a_forked_child_gets_its_own_pool(monkeypatch):
    parent = tiktoken_bpe._pool()
    assert tiktoken_bpe._pool() is parent
    monkeypatch.setattr(tiktoken_bpe.os, "getpid", lambda: -1)
    assert tiktoken_bpe._pool() is not parent


def test_added_tokens_that_strip_whitespace_take_one_call():
    """An added token with rstrip swallows the newlines after it: a cut there would hand one back."""
    for backend in (train_embedded_tokenizer(), _trained(GPT2_PRE)):
        tok = _fast(backend)
        tok.add_tokens([AddedToken("<x>", rstrip=True)])
        for text in ("ab <x>\n\ncd", "\n  <x>\nb <x>\n<x><x>\na" * 3):
            for pieces in (2, 5):
                assert encode(tok, text, min_chars=0, pieces=pieces).tolist() == list(tok(text)["input_ids"])
