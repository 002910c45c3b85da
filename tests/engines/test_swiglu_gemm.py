"""``EngineOptions(mlp="epilogue")``: the interleaved gate|up weight computes the same model.

The Hopper kernel itself runs only on the GPU (``scripts/probe_swiglu_gemm.py`` checks it against
XLA there); here: the layout, its conversions, where the kernel applies, and that an engine on
the interleaved weight (XLA's path on CPU) gives the default engine's logits, queries and tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spectrace.engines import BaseEngine, EngineOptions, LlamaConfig, RopeScaling, swiglu_gemm
from spectrace.engines.params import for_options, init_params

# ffn_dim a multiple of swiglu_gemm.BLOCK (64): the interleaved layout is used.
CFG = LlamaConfig(vocab_size=211, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=16, ffn_dim=128,
                  rope_theta=10000.0, rope_scaling=RopeScaling("llama3", original_max_position=16),
                  tie_embeddings=False)
ATOL = 2e-5


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, 11, np.float32, jax.devices()[0])


def engine(params, cfg=CFG, **switches):
    return BaseEngine(cfg, params, None, prefill_seq_len=8, ctx_len=64, device=jax.devices()[0],
                      options=EngineOptions(**switches))


def test_interleave_and_split_are_inverse_and_blockwise():
    gate = jnp.arange(2 * 3 * 256, dtype=jnp.float32).reshape(2, 3, 256)           # [L, D, F]
    up = -gate - 1
    w = swiglu_gemm.interleave(gate, up)                                            # [L, D, 2F]
    assert w.shape == (2, 3, 512)
    b = swiglu_gemm.BLOCK
    np.testing.assert_array_equal(w[..., :b], gate[..., :b])          # gate block 0, then up block 0
    np.testing.assert_array_equal(w[..., b:2 * b], up[..., :b])
    np.testing.assert_array_equal(w[..., 2 * b:3 * b], gate[..., b:2 * b])
    g, u = swiglu_gemm.split_gate_up(w)
    np.testing.assert_array_equal(g, gate)
    np.testing.assert_array_equal(u, up)
    with pytest.raises(ValueError, match="F=96 is not a multiple"):
        swiglu_gemm.interleave(gate[..., :96], up[..., :96])


def test_the_epilogue_option_interleaves_and_converts_both_ways(params):
    interleaved = engine(params, mlp="epilogue").params
    layer = interleaved["layers"][0]
    assert "w_gate_up_il" in layer and "w_gate_up" not in layer
    g, u = swiglu_gemm.split_gate_up(layer["w_gate_up_il"])
    np.testing.assert_array_equal(g, params["layers"]["w_gate"][0])
    np.testing.assert_array_equal(u, params["layers"]["w_up"][0])
    for opts, key in ((EngineOptions(), "w_gate_up"), (EngineOptions(qkv="separate"), "w_gate")):
        back = for_options(interleaved, CFG, opts)["layers"][1]
        assert key in back and "w_gate_up_il" not in back
    separate = for_options(interleaved, CFG, EngineOptions(qkv="separate"))["layers"][1]
    np.testing.assert_array_equal(separate["w_up"], params["layers"]["w_up"][1])
    again = for_options(for_options(interleaved, CFG, EngineOptions()), CFG, EngineOptions(mlp="epilogue"))
    np.testing.assert_array_equal(again["layers"][1]["w_gate_up_il"], interleaved["layers"][1]["w_gate_up_il"])


def test_an_mlp_width_the_blocks_do_not_tile_keeps_the_concatenated_weight(params):
    cfg = dataclasses.replace(CFG, ffn_dim=96)
    small = init_params(cfg, 3, np.float32, jax.devices()[0])
    layer = engine(small, cfg, mlp="epilogue").params["layers"][0]
    assert "w_gate_up" in layer and "w_gate_up_il" not in layer


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_the_epilogue_engine_gives_the_same_logits_queries_and_tokens(params, family):
    """On the interleaved weight (XLA's path here; Gemma's GELU never takes the kernel), the
    default engine's logits, queries and greedy tokens."""
    if family == "gemma":
        from spectrace.engines.defaults import GEMMA_BASE

        cfg = dataclasses.replace(GEMMA_BASE, vocab_size=256)
        params = init_params(cfg, 4, np.float32, jax.devices()[0])
    else:
        cfg = CFG
    ids = np.random.default_rng(5).integers(3, cfg.vocab_size, 40).astype(np.int32)
    default, variant = engine(params, cfg), engine(params, cfg, mlp="epilogue")
    assert "w_gate_up_il" in variant.params["layers"][0]
    ref = default.prefill_from_ids(ids, np.arange(40), return_queries=True)
    got = variant.prefill_from_ids(ids, np.arange(40), return_queries=True)
    np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got.queries), np.asarray(ref.queries), atol=ATOL)
    a, b = default.decode(ref, 7, return_queries=True), variant.decode(got, 7, return_queries=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(np.asarray(a.queries), np.asarray(b.queries), atol=ATOL)


def test_the_kernel_takes_bf16_silu_chunks_that_tile_on_hopper(monkeypatch):
    x = jnp.zeros((1, 256, 128), jnp.bfloat16)                                     # [B, T, D]
    w = jnp.zeros((128, 256), jnp.bfloat16)                                         # [D, 2F]
    on_hopper = jax.devices()[0].platform == "gpu" and jax.devices()[0].compute_capability == "9.0"
    assert (swiglu_gemm.tiles_for(x, w, jax.nn.silu) is not None) == on_hopper
    monkeypatch.setattr(swiglu_gemm, "_hopper", lambda: True)  # the shape rules, on any machine
    assert swiglu_gemm.tiles_for(x, w, jax.nn.silu) == swiglu_gemm.TILES
    assert swiglu_gemm.tiles_for(x[:, :128], w, jax.nn.silu) is None                   # 128-row multiples: XLA (TILES_128 slower)
    assert swiglu_gemm.tiles_for(x[:, :2], w, jax.nn.silu) is None                     # a decode step's rows
    assert swiglu_gemm.tiles_for(x[:, :200], w, jax.nn.silu) is None                   # rows that do not tile
    assert swiglu_gemm.tiles_for(x[..., :96], w[:96], jax.nn.silu) is None             # D by tile_k
    assert swiglu_gemm.tiles_for(x, w[:, :192], jax.nn.silu) is None                   # 2F by tile_n
    assert swiglu_gemm.tiles_for(x.astype(jnp.float32), w.astype(jnp.float32), jax.nn.silu) is None
    assert swiglu_gemm.tiles_for(x, w, jax.nn.gelu) is None                            # Gemma's GELU


def test_the_switch_picks_engines_by_name_and_refuses_a_misspelt_one(monkeypatch, params):
    monkeypatch.setenv("SPECTRACE_MLP_EPILOGUE", "spec")
    assert swiglu_gemm.options_for(EngineOptions(), "spec").mlp == "epilogue"
    assert swiglu_gemm.options_for(EngineOptions(), "base").mlp == "xla"
    draft = BaseEngine(CFG, params, None, prefill_seq_len=8, ctx_len=64, device=jax.devices()[0], name="spec")
    assert "w_gate_up_il" in draft.params["layers"][0]
    monkeypatch.setenv("SPECTRACE_MLP_EPILOGUE", "sepc")
    with pytest.raises(ValueError, match="SPECTRACE_MLP_EPILOGUE='sepc': unknown engine 'sepc'"):
        swiglu_gemm.options_for(EngineOptions(), "spec")
    monkeypatch.delenv("SPECTRACE_MLP_EPILOGUE")
    assert swiglu_gemm.options_for(EngineOptions(), "spec").mlp == "xla"


# ---- the kernel itself, in Pallas's GPU interpret mode on the CPU ---------------------------------

def _interpret():
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
    return InterpretGPUParams()


@pytest.mark.parametrize("M,D,F,tiles,sms", [
    (512, 320, 128, swiglu_gemm.TILES, 132),            # 5 k-steps through TILES' 3 stages
    (256, 128, 256, swiglu_gemm.Tiles(64, 256), 132),   # 128-column blocks
    (768, 192, 192, swiglu_gemm.Tiles(), 1),            # 9 tiles on one CTA: the persistent loop
    (384, 128, 256, swiglu_gemm.TILES_128, 3)])         # 12 tiles on 3 CTAs
def test_the_kernel_computes_swiglu_of_the_interleaved_gemm(monkeypatch, M, D, F, tiles, sms):
    monkeypatch.setattr(swiglu_gemm, "_sms", lambda: sms)  # a GPU runs many tiles on each CTA
    k = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k[0], (M, D), jnp.bfloat16)                               # [M, D]
    gate = (0.1 * jax.random.normal(k[1], (D, F))).astype(jnp.bfloat16)            # [D, F]
    up = (0.1 * jax.random.normal(k[2], (D, F))).astype(jnp.bfloat16)              # [D, F]
    w = swiglu_gemm.interleave(gate, up, tiles.tile_n // 2)                         # [D, 2F]
    out = swiglu_gemm.swiglu_gemm(x, w, tiles, interpret=_interpret())              # [M, F]
    xf = x.astype(jnp.float32)
    ref = jax.nn.silu(xf @ gate.astype(jnp.float32)) * (xf @ up.astype(jnp.float32))
    xla = jax.nn.silu(x @ gate) * (x @ up)                                          # the engines' bf16 form
    scale = float(jnp.abs(ref).max())
    assert out.shape == (M, F) and out.dtype == jnp.bfloat16
    err = float(jnp.abs(out.astype(jnp.float32) - ref).max()) / scale
    err_xla = float(jnp.abs(xla.astype(jnp.float32) - ref).max()) / scale
    assert err < 4e-3 and err <= 1.5 * err_xla, (err, err_xla)  # one bf16 rounding, not XLA's two
    with pytest.raises(ValueError, match="do not tile"):
        swiglu_gemm.swiglu_gemm(x[:200], w, tiles, interpret=_interpret())


def test_an_engine_with_the_kernel_in_its_chunks_matches_xla(monkeypatch):
    """A bf16 prefill whose chunk MLPs run the kernel (interpret mode; rows and widths that tile)
    against the same engine on XLA's path: the same top-1, logits within bf16 rounding."""
    cfg = LlamaConfig(vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=128,
                      rope_theta=10000.0, tie_embeddings=False)
    params = init_params(cfg, 5, jnp.bfloat16, jax.devices()[0])
    ids = np.random.default_rng(9).integers(3, cfg.vocab_size, 256).astype(np.int32)

    def run(mlp):
        eng = BaseEngine(cfg, params, None, prefill_seq_len=256, ctx_len=512, device=jax.devices()[0],
                         options=EngineOptions(mlp=mlp))
        return eng.prefill_from_ids(ids, np.arange(256)).logits

    ref = run("xla")
    calls = []
    kernel = swiglu_gemm.swiglu_gemm
    monkeypatch.setattr(swiglu_gemm, "_hopper", lambda: True)
    monkeypatch.setattr(swiglu_gemm, "swiglu_gemm",
                        lambda x, w, tiles=swiglu_gemm.TILES: calls.append(x.shape) or kernel(
                            x, w, tiles, interpret=_interpret()))
    got = run("epilogue")
    assert calls and set(calls) == {(256, 128)}  # traced once per distinct layer program: the chunk's MLP
    assert int(got.argmax()) == int(ref.argmax())
    assert np.abs(got - ref).max() / np.abs(ref).max() < 0.02  # 0.005 measured; gate and up swapped: 0.4
