"""A Hugging Face byte-level BPE run by ``tiktoken``, where the two are one tokenizer.

Why: the speculative TTFT starts with tokenization on the host, before the draft's first kernel.
The ``tokenizers`` library spent 3.7–3.9 ms of an H200 pipeline's ~88 ms on the 10741-token
benchmark prompt, cut into 16 pieces (docs/performance.md, "Session 20"). ``tiktoken`` runs the
same byte-level BPE 4.4x faster on one core than ``tokenizers``' batch call (1.67 against 7.41 ms
on the 2-core dev host), and ``encode`` at its default pieces 3.1x faster (1.45 against 4.43 ms,
medians; docs/performance.md "Session 23", ``scripts/probe_tokenize.py``).

The two algorithms differ in what they merge. ``tokenizers`` applies a list of merge rules
``(left, right)`` in the list's order; ``tiktoken`` merges any adjacent pair whose bytes are a
token, lowest rank (id) first, and takes a whole pre-token that is a token as it is. They agree
on a tokenizer written the way Hugging Face converts tiktoken's files (Llama 3's
``tokenizer.json``, ``transformers``' ``TikTokenConverter``): its rules are every split of every
token into two tokens, ordered by the joined token's id, and ``ignore_merges`` is on. (The
order among one token's splits is not checked: converters have written it differently.) Only such
*rank-defined* tokenizers take this path (:func:`rank_defined_reason` says why another does not);
the embedded tokenizer is written in that form (:func:`to_rank_form`). A BPE trained by
``tokenizers`` keeps one rule per token and takes ``tokenizers``' own path: there a pair tiktoken
would merge need not be a rule (234 of the embedded vocabulary's 1303 tokens have a second
split, 247 splits in all), so the two are not provably the same.

Also required, so that tiktoken's pieces are ``tokenizers``' pieces: no normalizer, GPT-2's
byte-level regex or Llama 3's ``Split`` regex before a regex-free ``ByteLevel``, no prefix
space, and added tokens matched as plain strings (no strip or word options, none a prefix of
another, one ``normalized`` flag for all, no ``"\\n"`` in them: ``engines.tokenizer`` cuts long
prompts after newlines), and ``encode_special_tokens`` off. Tested against
``tokenizers`` on generated text (``tests/engines/test_tiktoken_bpe.py``).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

#: ``tokenizers``' ByteLevel pre-tokenizer regex (``use_regex=True``), GPT-2's.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: Llama 3's ``Split`` regex (``tokenizer.json`` of meta-llama/Llama-3.1-8B).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: The ``Split`` regexes taken. Only known ones: a regex that leaves characters unmatched keeps them
#: as pieces in ``tokenizers`` but drops them in tiktoken, and the two regex engines read some
#: syntax differently (POSIX classes), so an unknown one keeps ``tokenizers``' path.
KNOWN_SPLITS = frozenset({LLAMA3_PATTERN})


def _byte_decoder() -> dict[str, int]:
    """ByteLevel's printable stand-in character -> the byte it stands for (GPT-2's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


_BYTE_OF = _byte_decoder()


def _ordinary_vocab(doc: dict) -> dict[str, int]:
    """The model's vocabulary without the added tokens (which are matched as whole strings)."""
    added = {t["content"] for t in doc.get("added_tokens", [])}
    return {tok: i for tok, i in doc["model"]["vocab"].items() if tok not in added}


def _all_splits(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of every token into two tokens, ordered as ``TikTokenConverter`` writes them:
    by the joined token's id, then the left part's, then the right part's."""
    found = []
    for tok, rank in vocab.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in vocab and right in vocab:
                found.append((rank, vocab[left], vocab[right], left, right))
    return [(left, right) for *_, left, right in sorted(found)]


def to_rank_form(backend):
    """``backend`` (a ``tokenizers.Tokenizer`` with a BPE model) rewritten rank-defined: the same
    vocabulary, every two-token split as a rule in id order, ``ignore_merges`` on."""
    from tokenizers import Tokenizer

    doc = json.loads(backend.to_str())
    doc["model"]["merges"] = [list(pair) for pair in _all_splits(_ordinary_vocab(doc))]
    doc["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(doc))


def pre_tokenizer_pattern(doc: dict) -> str | None:
    """The pre-tokenizer's regex when it is GPT-2's or Llama 3's, without a prefix space, else None:
    the regexes that both tiktoken and ``engines.tokenizer``'s cuts are known to be right for."""
    pre = doc.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if any(s.get("add_prefix_space", False) for s in steps):
        return None
    if [s.get("type") for s in steps] == ["ByteLevel"] and steps[0].get("use_regex", True):
        return GPT2_PATTERN
    if ([s.get("type") for s in steps] == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True)
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert", False)
            and (steps[0].get("pattern") or {}).get("Regex") in KNOWN_SPLITS):
        return steps[0]["pattern"]["Regex"]
    return None


def odd_added_token(doc: dict) -> str | None:
    """The first added token that is not matched as a plain string or holds a newline (None: none).
    Cuts after newlines (``engines.tokenizer``) could split one with a newline, and one that strips
    whitespace takes a newline that a cut hands to the next piece; tiktoken matches neither."""
    for t in doc.get("added_tokens", []):
        if t.get("lstrip") or t.get("rstrip") or t.get("single_word") or "\n" in t["content"]:
            return t["content"]
    return None


def rank_defined_reason(doc: dict) -> str | None:
    """Why ``tokenizer.json`` contents ``doc`` are not a rank-defined byte-level BPE (None: they are)."""
    model = doc.get("model") or {}
    if model.get("type") != "BPE":
        return f"model {model.get('type')!r} is not BPE"
    if doc.get("normalizer") is not None:
        return "it has a normalizer"
    if pre_tokenizer_pattern(doc) is None:
        return "its pre-tokenizer is not GPT-2's byte-level regex or Llama 3's Split, without a prefix space"
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "its BPE has dropout or subword affixes"
    if not model.get("ignore_merges", False):
        return "ignore_merges is off (a trained BPE's rules, not ranks)"
    if (odd := odd_added_token(doc)) is not None:
        return f"added token {odd!r} strips, matches whole words or holds a newline"
    contents = sorted(t["content"] for t in doc.get("added_tokens", []))
    if any(b.startswith(a) for a, b in zip(contents, contents[1:])):
        return "an added token is a prefix of another"
    if len({bool(t.get("normalized")) for t in doc.get("added_tokens", [])}) > 1:
        # tokenizers matches the normalized=False ones first, then the others: not leftmost first
        return "its added tokens mix normalized and not"
    vocab = _ordinary_vocab(doc)
    if any(ch not in _BYTE_OF for tok in vocab for ch in tok):
        return "a token is not byte-level"
    if len({_BYTE_OF[tok] for tok in vocab if len(tok) == 1}) != 256:
        return "not every byte is a token"
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    joined = [vocab.get(left + right, -1) for left, right in merges]
    if set(merges) != set(_all_splits(vocab)) or any(a > b for a, b in zip(joined, joined[1:])):
        return "its rules are not every two-token split in the joined token's id order"
    return None


class Encoder:
    """A rank-defined tokenizer's ordinary tokens as a tiktoken ``CoreBPE`` (added tokens special)."""

    def __init__(self, doc: dict):
        import tiktoken

        ranks = {bytes(_BYTE_OF[ch] for ch in tok): i for tok, i in _ordinary_vocab(doc).items()}
        added = {t["content"]: t["id"] for t in doc.get("added_tokens", [])}
        enc = tiktoken.Encoding("spectrace", pat_str=pre_tokenizer_pattern(doc), mergeable_ranks=ranks,
                                special_tokens=added)
        self._core = enc._core_bpe  # its encode(text, allowed_special) without the Python checks around it
        self._added = frozenset(added)

    def encode(self, text: str) -> list[int]:
        """``text``'s ids, added tokens recognised where they occur (as ``tokenizers`` does).
        Raises ``UnicodeEncodeError`` on a lone surrogate (the caller asks ``tokenizers``)."""
        return self._core.encode(text, self._added)

    def encode_parts(self, parts: list[str]) -> list[list[int]]:
        """Each part's ids, the parts on a persistent thread pool (tiktoken's Rust releases the GIL)."""
        if len(parts) == 1:
            return [self.encode(parts[0])]
        return list(_pool().map(self.encode, parts))


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process it belongs to, the pool)


def _pool() -> ThreadPoolExecutor:
    """One pool for the process: a pool per call would start its threads inside the TTFT. A
    forked child gets its own (the parent's threads do not exist there)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                                 thread_name_prefix="spectrace-tokenize"))
    return _POOL[1]


def fingerprint(backend) -> tuple:
    """What can change on a loaded ``tokenizers.Tokenizer`` and change its ids: added tokens
    (``add_tokens``, also of a string already in the vocabulary), ``encode_special_tokens``
    (transformers' ``split_special_tokens``), and a normalizer, pre-tokenizer or post-processor
    set after loading. ~45 us with 259 added tokens on the dev host; a BPE model replaced in place
    is not seen."""
    return (backend.get_vocab_size(with_added_tokens=True), len(backend.get_added_tokens_decoder()),
            backend.encode_special_tokens, str(backend.normalizer), str(backend.pre_tokenizer),
            str(backend.post_processor))


def build(doc: dict) -> Encoder | None:
    """The tiktoken encoder of ``tokenizer.json`` contents ``doc`` when they are rank-defined and
    tiktoken is installed, else None (the caller runs ``tokenizers``). ``$SPECTRACE_TIKTOKEN=0``
    turns the path off, for measuring it against ``tokenizers`` (``scripts/bench_variants.py``).
    ``engines.tokenizer`` keeps the result per loaded tokenizer (with its :func:`fingerprint`)."""
    if os.environ.get("SPECTRACE_TIKTOKEN", "1") == "0":  # a side-by-side run's tokenizers-only variant
        return None
    try:
        import tiktoken  # noqa: F401 - optional: without it the same ids come from tokenizers
    except ImportError:
        return None
    if rank_defined_reason(doc):
        return None
    try:
        return Encoder(doc)
    except Exception:  # noqa: BLE001 - a tokenizer tiktoken cannot build keeps tokenizers' path
        return None


def encoder(backend) -> Encoder | None:
    """:func:`build` for a loaded ``tokenizers.Tokenizer``, uncached; None while it reads added
    tokens as text (``encode_special_tokens``)."""
    return None if backend.encode_special_tokens else build(json.loads(backend.to_str()))
