"""The embedded default model pairs: a tiny draft and a tiny base that need no download.

Two pairs: the Llama pair (``default-draft`` / ``default-base``, what ``spectrace run`` uses
with no arguments) and a Gemma 3 pair (``gemma-tiny-draft`` / ``gemma-tiny-base``: sliding and
full layers, QK-norm, two RoPE bases) for the CPU tests of the Gemma path.

Both are written as ordinary Hugging Face checkpoint directories (``config.json``,
``model.safetensors``, tokenizer files) and loaded through the same code as any checkpoint, so
``spectrace run`` with no arguments exercises the real loading path. Weights are seeded random
(numpy PCG64) and the tokenizer is trained from the bundled corpus, so the files are the same on
every machine. They live in ``$SPECTRACE_CACHE_DIR/default`` (default ``~/.cache/spectrace``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from spectrace.engines.checkpoint import save_checkpoint
from spectrace.engines.config import LlamaConfig, RopeScaling
from spectrace.engines.models.gemma_config import GemmaConfig, gemma3_layer_types
from spectrace.engines.params import init_params_numpy
from spectrace.engines.tokenizer import save_embedded_tokenizer

# Bump when anything below changes what is written: a cache with another version is rebuilt.
GENERATOR_VERSION = 2  # 2: the embedded tokenizer is rank-defined (engines.tiktoken_bpe)

# vocab_size is a placeholder until the tokenizer is trained (then it is the tokenizer's size).
_ROPE = RopeScaling(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position=1024)
DEFAULT_BASE = LlamaConfig(vocab_size=2048, dim=256, n_layers=4, n_heads=8, n_kv_heads=2, head_dim=32,
                           ffn_dim=704, rms_eps=1e-5, rope_theta=500000.0, rope_scaling=_ROPE,
                           tie_embeddings=False, max_position=16384)
DEFAULT_DRAFT = LlamaConfig(vocab_size=2048, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32,
                            ffn_dim=352, rms_eps=1e-5, rope_theta=500000.0, rope_scaling=_ROPE,
                            tie_embeddings=True, max_position=16384)
_SEEDS = {"base": 3_000_001, "draft": 3_000_002, "gemma-base": 3_000_003, "gemma-draft": 3_000_004}

# Gemma 3 shaped like the 1B (draft: MQA, no rope scaling) and the 4B (base: GQA, linear scaling 8
# on full layers), shrunk: layers s s F s s F, windows shorter than the test prompts.
GEMMA_DRAFT = GemmaConfig(vocab_size=2048, dim=64, n_layers=6, n_heads=4, n_kv_heads=1, head_dim=32, ffn_dim=128,
                          layer_types=gemma3_layer_types(6, pattern=3), sliding_window=16, query_pre_attn_scalar=32,
                          rope_theta=1_000_000.0, rope_local_theta=10_000.0, max_position=16384)
GEMMA_BASE = GemmaConfig(vocab_size=2048, dim=128, n_layers=6, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=256,
                         layer_types=gemma3_layer_types(6, pattern=3), sliding_window=32, query_pre_attn_scalar=32,
                         rope_theta=1_000_000.0, rope_local_theta=10_000.0,
                         rope_scaling=RopeScaling("linear", factor=8.0), max_position=16384)
# family -> (subdirectory, draft config, base config)
PAIRS = {"llama": ("default", DEFAULT_DRAFT, DEFAULT_BASE), "gemma": ("default-gemma", GEMMA_DRAFT, GEMMA_BASE)}


def _seed_key(family: str, role: str) -> str:
    return role if family == "llama" else f"{family}-{role}"


def cache_root(root: str | Path | None = None) -> Path:
    """Where generated checkpoints go: ``root``, else ``$SPECTRACE_CACHE_DIR``, else ``~/.cache/spectrace``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("SPECTRACE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "spectrace"


def _marker(role: str, cfg, seed_key: str | None = None) -> dict:
    return {"generator": GENERATOR_VERSION, "role": role, "seed": _SEEDS[seed_key or role], "config": repr(cfg)}


def _is_current(path: Path, role: str, cfg, seed_key: str | None = None) -> bool:
    try:
        return json.loads((path / "spectrace.json").read_text()) == _marker(role, cfg, seed_key)
    except (OSError, ValueError):
        return False


def write_pair(dest: str | Path, family: str = "llama") -> tuple[Path, Path]:
    """Write ``dest/draft`` and ``dest/base`` of ``family``'s pair unconditionally; returns (draft, base) paths."""
    dest = Path(dest)
    _, draft_cfg, base_cfg = PAIRS[family]
    out = []
    for role, template in (("draft", draft_cfg), ("base", base_cfg)):
        path = dest / role
        path.mkdir(parents=True, exist_ok=True)
        vocab = save_embedded_tokenizer(path)
        cfg = _with_tokenizer(template, vocab)
        key = _seed_key(family, role)
        save_checkpoint(path, cfg, init_params_numpy(cfg, _SEEDS[key]))
        (path / "spectrace.json").write_text(json.dumps(_marker(role, cfg, key), sort_keys=True) + "\n")
        out.append(path)
    return out[0], out[1]


def _with_tokenizer(cfg, vocab: int):
    # Token ids of the embedded tokenizer: 0 BOS, 1 EOS, 2 PAD (its special tokens come first).
    return replace(cfg, vocab_size=vocab, bos_token_id=0, eos_token_id=1)


def default_pair(root: str | Path | None = None, family: str = "llama") -> tuple[Path, Path]:
    """(draft, base) checkpoint directories of ``family``'s pair (``"llama"`` or ``"gemma"``),
    generated on first use (atomically, safe across processes)."""
    if family not in PAIRS:
        raise ValueError(f"family={family!r}; embedded pairs: {sorted(PAIRS)}")
    base_dir = cache_root(root) / PAIRS[family][0]
    draft, base = base_dir / "draft", base_dir / "base"
    if _up_to_date(draft, base, family):
        return draft, base
    try:
        base_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = "$SPECTRACE_CACHE_DIR" if root is None and os.environ.get("SPECTRACE_CACHE_DIR") else "the cache root"
        raise OSError(f"cannot create {base_dir} for the default checkpoints ({where}: {e.strerror}); "
                      "set SPECTRACE_CACHE_DIR to a writable directory") from None
    # One writer at a time: processes started together on a fresh machine (benchmark workers, two
    # `spectrace run`s) would otherwise replace each other's half-moved pair ("Directory not empty").
    with _exclusive(base_dir / ".lock"):
        if _up_to_date(draft, base, family):  # written by the process we waited for
            return draft, base
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base_dir))
        try:
            new_draft, new_base = write_pair(tmp, family)
            for new, final in ((new_draft, draft), (new_base, base)):
                if final.exists():
                    shutil.rmtree(final, ignore_errors=True)
                os.replace(new, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return draft, base


@contextlib.contextmanager
def _exclusive(path: Path):
    """An exclusive advisory lock on ``path`` (``fcntl.flock``; released when the process dies too)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the pair is still written to a temporary name first)
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _up_to_date(draft: Path, base: Path, family: str = "llama") -> bool:
    _, draft_cfg, base_cfg = PAIRS[family]

    def current(path, role, template):
        try:
            vocab = json.loads((path / "config.json").read_text())["vocab_size"]
        except (OSError, ValueError, KeyError):
            return False
        return _is_current(path, role, _with_tokenizer(template, vocab), _seed_key(family, role))

    return current(draft, "draft", draft_cfg) and current(base, "base", base_cfg)
