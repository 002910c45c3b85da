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
from typing import NamedTuple

import numpy as np

from spectrace.engines import tiktoken_bpe

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
    """Train the embedded byte-level BPE; returns a ``tokenizers.Tokenizer`` that prepends BOS,
    rank-defined (``engines.tiktoken_bpe``)."""
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
    # Written as Llama 3's tokenizer is (every split a rule, whole tokens kept): one tokenizer for
    # ``tokenizers`` and ``tiktoken`` alike, so prompts take the fast path (engines.tiktoken_bpe).
    return tiktoken_bpe.to_rank_form(tok)


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
    ``ByteLevel``) end a pre-token next to a ``"\\n"`` that is followed by a non-space character
    (Llama 3's after it, GPT-2's before it: :func:`_cut_points`). Cutting the text only there
    and encoding the pieces as one batch (Rust threads) gives the same ids. Anything else (a
    normalizer, ``add_prefix_space``, another pre-tokenizer or model, a post-processor that
    appends tokens, a slow tokenizer, padding or truncation left on the backend), and any text
    without a cut, takes the single call.

    The pieces' ids go straight into one array (``np.fromiter``), not through a joined list and
    ``np.asarray``: 0.42 -> 0.30 ms for the 10741-token benchmark prompt on the 2-core dev host
    (docs/evidence/h100-session18/dev_host.txt).

    A rank-defined tokenizer (Llama 3's, the embedded one) runs on ``tiktoken`` instead, at any
    length, its pieces on a persistent thread pool (``engines.tiktoken_bpe``: the same ids, 3x
    faster at the default pieces on the dev host).
    """
    found = _parallel_backend(tokenizer)
    # transformers' split_special_tokens reaches the backend only inside its next call: either one
    # set, or the two apart, and the plain call decides (and sets the backend's).
    if found is not None and (getattr(tokenizer, "split_special_tokens", False) or found[0].encode_special_tokens):
        found = None
    if found is not None:
        backend, plan = found
        cuts = []
        if len(text) >= min_chars:
            cuts = _cut_points(text, pieces or os.cpu_count() or 1, after_newline=plan.after_newline,
                               avoid=plan.avoid)
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        if plan.fast is not None:
            try:
                return _ids_array(plan.prefix, plan.fast.encode_parts(parts))              # [P]
            except UnicodeEncodeError:  # a lone surrogate: the single call says what tokenizers does
                pass
        elif cuts and backend.padding is None and backend.truncation is None:
            # (transformers sets padding and truncation on the backend per call and leaves them
            # set: a batch call of our own would apply the last call's.)
            batch = getattr(backend, "encode_batch_fast", backend.encode_batch)(parts, add_special_tokens=False)
            return _ids_array(plan.prefix, [enc.ids for enc in batch])                      # [P]
    return np.asarray(tokenizer(text)["input_ids"], np.int32)


def _ids_array(prefix: list[int], runs: list[list[int]]) -> np.ndarray:
    """``prefix`` and the runs of ids as one int32 array ``[P]``, without a joined list in between."""
    n = len(prefix) + sum(len(r) for r in runs)
    return np.fromiter(itertools.chain(prefix, *runs), np.int32, n)


def _cut_points(text: str, pieces: int, *, after_newline: bool = True, avoid: str = "") -> list[int]:
    """Up to ``pieces - 1`` cut offsets at a ``\\n`` followed by a non-space character that
    does not begin an added token (``avoid``: their first characters): right after the newline
    (``after_newline``: Llama 3's regex), or right before it (GPT-2's).

    The two regexes end a pre-token at different sides of that newline. Llama 3's
    ``\\s*[\\r\\n]+`` takes a whitespace run up to its last newline, so a cut goes after it.
    GPT-2's ``\\s+(?!\\S)`` leaves a run's last character for the next pre-token: in
    ``"x\\n\\ny"`` the whole text has two ``"\\n"`` pieces, where a piece ending after the
    second would hold one ``"\\n\\n"``. Before that last newline is a boundary either way (after
    the rest of the run, or after the non-space character before it), unless an added token
    follows it: the text before an added token is pre-tokenized as if it ended there.
    """
    cuts, step = [], len(text) // max(pieces, 1)
    for k in range(1, pieces):
        i = text.find("\n", max(k * step, 1))
        while i != -1 and (i + 1 >= len(text) or text[i + 1].isspace() or text[i + 1] in avoid):
            i = text.find("\n", i + 1)
        cut = i + 1 if after_newline else i
        if i != -1 and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    return cuts


class _Plan(NamedTuple):
    """How a loaded tokenizer's long prompts are encoded in pieces (:func:`_cut_points`' arguments)."""

    prefix: list[int]                      # the special-token ids it puts in front, e.g. [BOS]
    after_newline: bool                    # Llama 3's regex (cut after the newline), else GPT-2's
    avoid: str                             # the added tokens' first characters
    fast: tiktoken_bpe.Encoder | None      # tiktoken where the tokenizer is rank-defined


# id(backend) -> (backend, tiktoken_bpe.fingerprint, _Plan or None): decided once per loaded
# tokenizer, again when it changes.
_PLANS: dict[int, tuple] = {}


def _parallel_backend(tokenizer):
    """(``tokenizers.Tokenizer``, its :class:`_Plan`) if pieces encode exactly as the whole, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    fingerprint = tiktoken_bpe.fingerprint(backend)
    entry = _PLANS.get(id(backend))
    if entry is None or entry[0] is not backend or entry[1] != fingerprint:
        entry = _PLANS[id(backend)] = (backend, fingerprint, _plan(backend))
    return None if entry[2] is None else (backend, entry[2])


def _plan(backend) -> _Plan | None:
    """The plan when the tokenizer is a byte-level BPE without a normalizer, with GPT-2's or Llama
    3's pre-tokenizer regex (``tiktoken_bpe.pre_tokenizer_pattern``), added tokens matched as plain
    strings without newlines (``tiktoken_bpe.odd_added_token``), adding special tokens only in
    front; else None."""
    doc = json.loads(backend.to_str())
    pattern = tiktoken_bpe.pre_tokenizer_pattern(doc)
    if not (pattern and doc.get("normalizer") is None and tiktoken_bpe.odd_added_token(doc) is None
            and (doc.get("model") or {}).get("type") == "BPE"):
        return None
    with_special, plain = backend.encode("a").ids, backend.encode("a", add_special_tokens=False).ids
    prefix = with_special[: len(with_special) - len(plain)]
    if with_special[len(prefix):] != plain:
        return None
    avoid = "".join(sorted({t["content"][:1] for t in doc.get("added_tokens", [])}))
    return _Plan(prefix, pattern == tiktoken_bpe.LLAMA3_PATTERN, avoid, tiktoken_bpe.build(doc))


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
