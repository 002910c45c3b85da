"""Tokenizers: loading a checkpoint's through ``transformers``, and the embedded one spectrace trains.

The embedded tokenizer is a byte-level BPE trained with the ``tokenizers`` library on the prose
bundled in ``engines/data/corpus.txt``, so the default model pair (and the random-weight presets)
work without any download. Training is deterministic: the same corpus gives the same file.
Also here: long prompts encoded in parallel pieces where that gives the same ids (:func:`encode`),
and the check that a speculative pair's two models share one tokenizer (:func:`check_same_tokenizer`).
"""

from __future__ import annotations

import itertools
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|pad|>"
_VOCAB_TARGET = 2048  # the trainer stops earlier when the corpus has no more pairs to merge


def corpus_text() -> str:
    """The bundled English prose (a few KB), the tokenizer's training text and the demo prompts' source."""
    return resources.files("spectrace.engines").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def exact_prompt(tokenizer, n_tokens: int) -> str:
    """The bundled corpus, repeated (joined by ``"\\n"``), cut to a non-empty prefix of ``n_tokens`` tokens.

    For benchmarks that must prefill an exact length. Guarantees
    ``len(tokenizer(text)["input_ids"]) >= n_tokens`` (special tokens such as BOS included), and
    ``== n_tokens`` unless no cut within 64 characters past the shortest non-empty long-enough
    prefix gives that count (one more character can add several tokens, e.g. a multi-byte one in
    a byte-level BPE; and one character plus BOS is already 2). The text is cut, not decoded from
    cut ids, so it tokenizes back to the count measured. Deterministic for a given tokenizer.
    """
    def count(text):
        return len(tokenizer(text)["input_ids"])

    unit = corpus_text()
    text = unit
    while count(text) < n_tokens:
        text += "\n" + unit
    lo, hi = 1, len(text)                     # smallest prefix with >= n_tokens tokens
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(text[:mid]) < n_tokens else (lo, mid)
    for end in range(lo, min(lo + 64, len(text) + 1)):
        if count(text[:end]) == n_tokens:
            return text[:end]
    return text[:lo]


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


# ---- long prompts: tokenizing pieces in parallel --------------------------------------------------
PARALLEL_MIN_CHARS = 16_384  # below this one call is as fast; above it pieces run on all cores


def encode(tokenizer, text: str, *, min_chars: int = PARALLEL_MIN_CHARS, pieces: int | None = None) -> np.ndarray:
    """``tokenizer(text)["input_ids"]`` as an int32 array ``[P]``, computed in parallel pieces when
    that is provably the same.

    One ``tokenizers`` call on one string runs on one core: 25–40 ms for a 10k-token prompt on
    the H100 host, a fifth of a speculative TTFT. A byte-level BPE never merges across its
    pre-tokens, and both pre-tokenizer regexes in use (GPT-2's, and Llama 3's ``Split`` before a
    ``ByteLevel``) end a pre-token right after a ``"\\n"`` that is followed by a non-space character.
    Cutting the text only there and encoding the pieces as one batch (Rust threads) gives the
    same ids. Anything else (a normalizer, ``add_prefix_space``, another pre-tokenizer or model,
    a post-processor that appends tokens, a slow tokenizer) takes the single call.

    The pieces' ids go straight into one array (``np.fromiter``), not through a joined list and
    ``np.asarray``: 0.42 -> 0.30 ms for the 10741-token benchmark prompt on the 2-core dev host
    (docs/evidence/h100-session18/dev_host.txt).
    """
    cuts = _cut_points(text, pieces or os.cpu_count() or 1) if len(text) >= min_chars else []
    found = _parallel_backend(tokenizer) if cuts else None
    if found is None:
        return np.asarray(tokenizer(text)["input_ids"], np.int32)
    backend, prefix = found
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    batch = getattr(backend, "encode_batch_fast", backend.encode_batch)(parts, add_special_tokens=False)
    n = len(prefix) + sum(len(enc) for enc in batch)
    return np.fromiter(itertools.chain(prefix, *(enc.ids for enc in batch)), np.int32, n)   # [P]


def _cut_points(text: str, pieces: int) -> list[int]:
    """Up to ``pieces - 1`` cut offsets, each right after a ``\\n`` followed by a non-space character."""
    cuts, step = [], len(text) // max(pieces, 1)
    for k in range(1, pieces):
        i = text.find("\n", k * step)
        while i != -1 and (i + 1 >= len(text) or text[i + 1].isspace()):
            i = text.find("\n", i + 1)
        if i != -1 and (not cuts or i + 1 > cuts[-1]):
            cuts.append(i + 1)
    return cuts


_VERDICTS: dict[int, tuple] = {}  # id(backend) -> (backend, its special-token prefix or None), checked once


def _parallel_backend(tokenizer):
    """(``tokenizers.Tokenizer``, the ids it puts in front) if pieces encode exactly as the whole, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    entry = _VERDICTS.get(id(backend))
    if entry is None or entry[0] is not backend:
        entry = _VERDICTS[id(backend)] = (backend, _cuttable(backend))
    return None if entry[1] is None else entry


def _cuttable(backend) -> list[int] | None:
    """The special-token prefix (e.g. ``[BOS]``) when the tokenizer is a byte-level BPE without a
    normalizer, with a GPT-2 or Llama-3 style pre-tokenizer, adding special tokens only in front; else None."""
    doc = json.loads(backend.to_str())
    pre = doc.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    regex_ok = (kinds == ["ByteLevel"] and steps[0].get("use_regex", True)) or (
        kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True))
    no_prefix_space = all(not s.get("add_prefix_space", False) for s in steps if s.get("type") == "ByteLevel")
    if not (regex_ok and no_prefix_space and doc.get("normalizer") is None
            and (doc.get("model") or {}).get("type") == "BPE"):
        return None
    with_special, plain = backend.encode("a").ids, backend.encode("a", add_special_tokens=False).ids
    prefix = with_special[: len(with_special) - len(plain)]
    return prefix if with_special[len(prefix):] == plain else None


# ---- a speculative pair shares one tokenizer ------------------------------------------------------
_PAIR_PROBE = "Speculative prefill: the draft's token 17 at position 3,141 -- café, naïve, 東京."


def check_same_tokenizer(draft_tok, base_tok) -> None:
    """Raise unless a speculative pair's tokenizers agree (same vocabulary, same ids for a probe
    text): the kept indices index the draft's tokens, so the base must tokenize identically."""
    dv, bv = draft_tok.get_vocab(), base_tok.get_vocab()
    if dv != bv:
        only_d = sorted(set(dv) - set(bv))[:3]
        only_b = sorted(set(bv) - set(dv))[:3]
        moved = sorted(t for t in set(dv) & set(bv) if dv[t] != bv[t])[:3]
        raise ValueError(f"draft and base tokenizers disagree (vocab sizes {len(dv)} vs {len(bv)}; only in draft: "
                         f"{only_d}, only in base: {only_b}, different ids: {moved}); speculative prefill "
                         "needs one tokenizer for both models")
    a, b = draft_tok(_PAIR_PROBE)["input_ids"], base_tok(_PAIR_PROBE)["input_ids"]
    if list(a) != list(b):
        raise ValueError(f"draft and base tokenizers disagree: same vocabulary, but {_PAIR_PROBE!r} becomes "
                         f"{list(a)[:8]}... vs {list(b)[:8]}...; speculative prefill needs one tokenizer for both")
