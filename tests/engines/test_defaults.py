"""The embedded default pair and the random-weight presets."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

from spectrace.engines import RANDOM_PRESETS, BaseEngine, read_config
from spectrace.engines.defaults import write_pair
from spectrace.engines.params import init_params, param_shapes
from spectrace.engines.tokenizer import corpus_text


def test_default_pair_is_deterministic(tmp_path):
    a_draft, a_base = write_pair(tmp_path / "a")
    b_draft, b_base = write_pair(tmp_path / "b")
    for a, b in ((a_draft, b_draft), (a_base, b_base)):
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir())
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_processes_started_together_all_get_the_default_pair(tmp_path):
    # Benchmark workers (scripts/bench_variants.py) or two `spectrace run`s on a fresh machine
    # create the pair at once; one of them used to fail moving its copy over another's
    # ("Directory not empty": a worker died in a session-11 H200 run). Writers take turns: while
    # one holds the pair's lock the others wait, then find the pair written and use it.
    import subprocess
    import sys
    import time

    from spectrace.engines.defaults import _exclusive

    (tmp_path / "default").mkdir()
    code = ("import sys; from spectrace.engines.defaults import default_pair; "
            "d, b = default_pair(sys.argv[1]); print(d, b)")
    with _exclusive(tmp_path / "default" / ".lock"):                          # a writer at work
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(3)
        assert [p.poll() for p in procs] == [None] * 4                         # they wait for it
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1
    assert not [p for p in (tmp_path / "default").iterdir() if p.name.startswith(".tmp-")]
    assert read_config(tmp_path / "default" / "draft").n_layers == 2


def test_default_pair_shapes(spectrace_cache):
    draft = read_config(spectrace_cache / "default" / "draft")
    base = read_config(spectrace_cache / "default" / "base")
    assert draft.vocab_size == base.vocab_size > 1000
    assert (base.n_layers, base.dim, draft.n_layers, draft.dim) == (4, 256, 2, 128)
    assert base.n_kv_heads < base.n_heads and draft.tie_embeddings


def test_default_base_two_chunk_prefill_and_generate(spectrace_cache):
    engine = BaseEngine.from_pretrained("default-base", prefill_seq_len=64, ctx_len=256, cache_dir=spectrace_cache)
    prompt = corpus_text()[:400]
    t0 = time.perf_counter()
    out = engine.generate(prompt, 12)
    elapsed = time.perf_counter() - t0
    assert out.prefill.num_chunks == 2 and out.prefill.padded_len == 128
    assert 64 < out.prefill.prompt_tokens <= 128
    assert out.tokens.shape == (12,) and isinstance(out.text, str)
    assert elapsed < 20, f"2-chunk prefill + 12 tokens took {elapsed:.1f}s on CPU (compile included)"
    # text prefill == the same ids through prefill_from_ids (BOS included by the tokenizer)
    ids = engine.tokenizer(prompt)["input_ids"]
    assert ids[0] == engine.config.bos_token_id
    again = engine.prefill_from_ids(ids, np.arange(len(ids)))
    np.testing.assert_allclose(again.logits, out.prefill.logits, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(again.token_ids, out.prefill.token_ids)


def test_text_prompt_errors(spectrace_cache):
    engine = BaseEngine.from_pretrained("default-draft", prefill_seq_len=16, ctx_len=32, cache_dir=spectrace_cache)
    with pytest.raises(ValueError, match="prompt='' is empty"):
        engine.prefill("")
    with pytest.raises(ValueError, match=r"more than ctx_len=32"):
        engine.prefill(corpus_text()[:1000])
    with pytest.raises(TypeError, match="prompt must be a str"):
        engine.prefill([1, 2, 3])


@pytest.mark.parametrize("name, billions", [("llama-3.1-8b", 8.03), ("llama-3.2-1b", 1.24)])
def test_random_presets_have_the_real_shapes(name, billions):
    cfg = RANDOM_PRESETS[name]
    assert cfg.vocab_size == 128256 and cfg.rope_scaling.rope_type == "llama3"
    assert abs(cfg.num_params / 1e9 - billions) < 0.01
    # full-size shapes without allocating (jax.eval_shape), in bfloat16
    shapes = jax.eval_shape(lambda: init_params(cfg, 0, jax.numpy.bfloat16, jax.devices()[0]))
    flat = jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), shapes)
    assert flat["layers"]["wq"] == ((cfg.n_layers, cfg.dim, cfg.n_heads, cfg.head_dim), jax.numpy.bfloat16)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(param_shapes(cfg),
                                                                               is_leaf=lambda x: isinstance(x, tuple))


def test_random_preset_through_from_config(spectrace_cache):
    """A shrunk 1B shape (vocab too, for CPU time) with random weights and the embedded tokenizer."""
    from dataclasses import replace

    from spectrace.engines.defaults import default_pair
    from spectrace.engines.tokenizer import load_tokenizer

    cfg = replace(RANDOM_PRESETS["llama-3.2-1b"], n_layers=1, dim=64, n_heads=4, n_kv_heads=2, head_dim=16,
                  ffn_dim=128, vocab_size=4096)
    tok = load_tokenizer(default_pair(spectrace_cache)[1])
    engine = BaseEngine.from_config(cfg, tok, prefill_seq_len=32, ctx_len=128)
    out = engine.generate("The keeper wrote everything down.", 4)
    assert out.tokens.shape == (4,) and np.all(out.tokens < cfg.vocab_size)
