"""Invariants of the Gemma path on CPU: chunked = one-shot, the pruned-prompt rule against an
independent reference, cached decode = teacher forcing, every switch = the default, the sliding
band = the full mask, the presets' real shapes, and the errors that name what is wrong.

The pruned-prompt rule: a kept token sees exactly the kept subset of what it would have seen in
the full prompt, its window measured in original positions. The reference states it directly:
the full prompt through the cache-free forward with the dropped tokens masked out as keys.
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from spectrace.engines import BaseEngine, CheckpointError, EngineOptions, read_config
from spectrace.engines import attention
from spectrace.engines.checkpoint import hf_state_dict, load_weights
from spectrace.engines.models.gemma_config import FULL, SLIDING
from spectrace.engines.params import init_params, init_params_numpy, param_shapes
from spectrace.engines.presets import RANDOM_PRESETS
from spectrace.engines.testing_models import GEMMA_REFERENCE_MODELS

ATOL = 2e-5
CFG3 = GEMMA_REFERENCE_MODELS["gemma3_mqa_window5"][0]     # window 5, layers s s F s s
CFG2 = GEMMA_REFERENCE_MODELS["gemma2_softcap"][0]         # window 6, layers s F s F, soft-caps
CONFIGS = {"gemma3": CFG3, "gemma2": CFG2}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def make(request):
    cfg = CONFIGS[request.param]
    params = init_params(cfg, 5, np.float32, jax.devices()[0])

    def make(prefill_seq_len, ctx_len=96, **switches):
        return BaseEngine(cfg, params, None, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len,
                          device=jax.devices()[0], options=EngineOptions(**switches))
    make.cfg = cfg
    return make


def ids_of(n, vocab, seed=0):
    return np.random.default_rng(seed).integers(3, vocab, n).astype(np.int32)


def mask_of(n, keep):
    kept = np.zeros(n, bool)
    kept[keep] = True
    return kept


# Gaps (runs of dropped tokens) smaller than every window here (1, 2) and larger (8, 10, 13).
KEEPS = {"small-and-large-gaps": np.array([0, 1, 2, 3, 6, 7, 8, 19, 20, 21, 23, 26, 35, 36, 39]),
         "only-large-gaps": np.array([0, 1, 12, 13, 14, 28, 29, 39])}


@pytest.mark.parametrize("psl", [4, 7, 16])
def test_chunked_prefill_equals_one_shot(make, psl):
    # windows 5 and 6: longer than a 4-token chunk, shorter than 7 and 16
    cfg = make.cfg
    one_shot, chunked = make(64), make(psl)
    for n in (2 * psl, 2 * psl + 1, 3 * psl + 1):
        ids = ids_of(n, cfg.vocab_size, seed=n)
        ref = one_shot.prefill_from_ids(ids, np.arange(n), return_queries=True)
        ref_keys = np.asarray(one_shot.cache_keys())
        got = chunked.prefill_from_ids(ids, np.arange(n), return_queries=True)
        assert got.num_chunks == -(n // -psl)
        np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(got.queries), np.asarray(ref.queries), atol=ATOL)
        np.testing.assert_allclose(np.asarray(chunked.cache_keys()), ref_keys, atol=ATOL)
        np.testing.assert_allclose(got.logits, chunked.forward_logits(ids)[-1], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("keep_name", sorted(KEEPS))
@pytest.mark.parametrize("psl", [4, 16])
def test_pruned_prefill_follows_the_rule(make, keep_name, psl):
    cfg, keep = make.cfg, KEEPS[keep_name]
    engine = make(psl)
    ids = ids_of(40, cfg.vocab_size, seed=11)
    rule = engine.forward_logits(ids, key_mask=mask_of(40, keep))[keep]             # the independent reference
    engine.prefill_from_ids(ids, np.arange(40))                                       # must not leak into the next
    pruned = engine.prefill_from_ids(ids[keep], keep, return_queries=True)
    assert pruned.next_position == 40 and pruned.cache_len == len(keep)
    np.testing.assert_allclose(pruned.logits, rule[-1], atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(engine.forward_logits(ids[keep], keep), rule, atol=ATOL, rtol=1e-5)
    # The window is by position, not by slot: renumbering the kept tokens 0..P-1 (what a
    # slot-window would assume, RoPE aside) gives other logits.
    assert np.abs(engine.forward_logits(ids[keep], np.arange(len(keep)))[-1] - rule[-1]).max() > 1e-3


def teacher_forced(engine, ids, positions, generated):
    start = positions[-1] + 1
    all_ids = np.concatenate([ids, generated[:-1]])
    all_pos = np.concatenate([positions, np.arange(start, start + len(generated) - 1)])
    return engine.forward_logits(all_ids, all_pos)[len(ids) - 1:].argmax(-1)


@pytest.mark.parametrize("pruned", [False, True], ids=["full", "pruned"])
def test_scan_decode_equals_python_decode_equals_teacher_forcing(make, pruned):
    cfg = make.cfg
    ids, positions = ids_of(21, cfg.vocab_size, seed=5), np.arange(21)
    if pruned:
        keep = np.array([0, 3, 4, 12, 13, 20])  # gaps of 2 and 7 around windows of 5 and 6
        ids, positions = ids[keep], positions[keep]
    scan, python = make(8), make(8, decode="python")
    by_scan = scan.decode(scan.prefill_from_ids(ids, positions), 14)                  # decodes past the window
    by_python = python.decode(python.prefill_from_ids(ids, positions), 14)
    np.testing.assert_array_equal(by_scan.tokens, by_python.tokens)
    np.testing.assert_array_equal(by_scan.tokens, teacher_forced(scan, ids, positions, by_scan.tokens))


VARIANTS = [dict(decode="python"), dict(prefill="python"), dict(qkv="separate"), dict(attention="vmap"),
            dict(attention="batched"), dict(mlp="epilogue"), dict(last_chunk="full"),
            dict(decode="python", prefill="python", qkv="separate", attention="vmap")]


@pytest.mark.parametrize("switches", VARIANTS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_switch_gives_the_same_logits_and_tokens(make, switches):
    ids = ids_of(19, make.cfg.vocab_size, seed=6)
    default, variant = make(8), make(8, **switches)
    ref = default.prefill_from_ids(ids, np.arange(19), return_queries=True)
    got = variant.prefill_from_ids(ids, np.arange(19), return_queries=True)
    np.testing.assert_allclose(got.logits, ref.logits, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got.queries), np.asarray(ref.queries), atol=ATOL)
    a, b = default.decode(ref, 9, return_queries=True), variant.decode(got, 9, return_queries=True)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(np.asarray(a.queries), np.asarray(b.queries), atol=ATOL)


def test_continue_cache_equals_one_shot(make):
    engine = make(8)
    ids = ids_of(27, make.cfg.vocab_size, seed=4)
    engine.prefill_from_ids(ids[:11], np.arange(11))
    second = engine.prefill_from_ids(ids[11:], np.arange(11, 27), continue_cache=True)
    np.testing.assert_allclose(second.logits, engine.forward_logits(ids)[-1], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("T,W,first", [(8, 3, 0), (8, 3, 13), (8, 20, 5), (1, 5, 30), (6, 4, 2), (16, 1, 9),
                                       (4, 64, 20)])
def test_sliding_band_equals_the_full_window_mask(T, W, first):
    # Gapped positions (as in a pruned prompt), a cache longer or shorter than the band, padding.
    B, N, K, H, S = 1, 4, 2, 8, 48
    rng = np.random.default_rng(T * 100 + W)
    q = rng.standard_normal((B, T, N, H), np.float32)
    ck = rng.standard_normal((B, S, K, H), np.float32)
    cv = rng.standard_normal((B, S, K, H), np.float32)
    filled = first + T
    pos = np.cumsum(rng.integers(1, 4, S)).astype(np.int32)                          # strictly increasing
    k_pos = np.where(np.arange(S) < filled, pos, -1)[None].astype(np.int32)
    k_pos[0, filled - 1] = -1 if T > 1 else k_pos[0, filled - 1]                    # a padding row's key
    q_pos = k_pos[:, first:first + T]
    spec = attention.AttnSpec(scale=0.3, softcap=2.0, window=W)
    want = attention.masked(q, ck, cv, q_pos, k_pos, spec=spec)
    got = jax.jit(attention.sliding, static_argnames="spec")(q, ck, cv, q_pos, k_pos, np.int32(first), spec=spec)
    real = (q_pos[0] >= 0)
    np.testing.assert_allclose(np.asarray(got)[:, real], np.asarray(want)[:, real], atol=2e-6, rtol=1e-5)


# ---- presets --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, full", [
    ("gemma-3-1b", 999_885_952, (5, 11, 17, 23)),
    ("gemma-3-4b", 3_880_263_168, (5, 11, 17, 23, 29)),
    ("gemma-3-12b", 11_766_034_176, (5, 11, 17, 23, 29, 35, 41, 47)),
])
def test_gemma_presets_have_the_real_shapes(name, params, full):
    cfg = RANDOM_PRESETS[name]
    assert cfg.num_params == params and cfg.full_layers == full and cfg.head_dim == 256
    assert cfg.query_pre_attn_scalar == 256 and cfg.qk_norm and cfg.tie_embeddings
    if name == "gemma-3-1b":
        assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.sliding_window, cfg.vocab_size) == (
            1152, 26, 4, 1, 512, 262144) and cfg.rope_scaling is None
    else:
        assert cfg.rope_scaling.rope_type == "linear" and cfg.rope_scaling.factor == 8.0
    shapes = jax.eval_shape(lambda: init_params(cfg, 0, jax.numpy.bfloat16, jax.devices()[0]))
    assert shapes["layers"]["q_norm"].shape == (cfg.n_layers, 256)
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == params
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(
        param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


def test_a_shrunk_gemma_preset_generates_with_the_embedded_tokenizer(spectrace_cache):
    from dataclasses import replace

    from spectrace.engines.defaults import default_pair
    from spectrace.engines.models.gemma_config import gemma3_layer_types
    from spectrace.engines.tokenizer import load_tokenizer

    cfg = replace(RANDOM_PRESETS["gemma-3-1b"], n_layers=6, layer_types=gemma3_layer_types(6), dim=64, n_heads=4,
                  head_dim=16, ffn_dim=128, vocab_size=4096, sliding_window=8, query_pre_attn_scalar=16)
    engine = BaseEngine.from_config(cfg, load_tokenizer(default_pair(spectrace_cache)[1]), prefill_seq_len=16,
                                    ctx_len=128)
    out = engine.generate("The keeper wrote everything down, and then the sea came in.", 6)
    assert out.tokens.shape == (6,) and np.all(out.tokens < cfg.vocab_size)


# ---- checkpoints and errors ---------------------------------------------------------------------
NAME = "gemma3_mqa_window5"


@pytest.fixture
def ckpt(gemma_reference_models, tmp_path):
    dest = tmp_path / "ckpt"
    shutil.copytree(gemma_reference_models[NAME], dest)
    return dest


def _edit_config(path, **changes):
    body = json.loads((path / "config.json").read_text())
    body.update(changes)
    (path / "config.json").write_text(json.dumps(body))


@pytest.mark.parametrize("model_type, arch", [("mistral", ["MistralForCausalLM"]), ("gemma4_text", None),
                                              ("paligemma", ["PaliGemmaForConditionalGeneration"])])
def test_an_unsupported_model_type_names_it_and_the_supported_ones(ckpt, model_type, arch):
    _edit_config(ckpt, model_type=model_type, architectures=arch)
    with pytest.raises(CheckpointError) as err:
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)
    msg = str(err.value)
    assert f"config.json: unsupported architecture {arch} (model_type={model_type!r})" in msg
    for supported in ("'llama' (LlamaForCausalLM)", "'gemma2' (Gemma2ForCausalLM)",
                      "'gemma3_text' (Gemma3ForCausalLM)", "'gemma3' (Gemma3ForConditionalGeneration"):
        assert supported in msg


def test_a_gemma_checkpoint_missing_a_tensor_names_the_tensor_and_the_file(ckpt):
    from safetensors.numpy import save_file

    cfg, seed = GEMMA_REFERENCE_MODELS[NAME]
    state = hf_state_dict(init_params_numpy(cfg, seed), cfg)
    del state["model.layers.2.self_attn.k_norm.weight"]
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)
    assert f"{ckpt / 'model.safetensors'}: tensor 'model.layers.2.self_attn.k_norm.weight' is missing" in str(err.value)


def test_a_sharded_gemma_checkpoint_missing_a_tensor_names_the_shards(gemma_reference_models, tmp_path):
    from spectrace.engines.testing_models import write_reference_model

    path = write_reference_model(NAME, tmp_path / "sharded", max_shard_bytes=50_000)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.4.post_feedforward_layernorm.weight"]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg = read_config(path)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.4\.post_feedforward_layernorm\.weight' is missing "
                                              r"from the checkpoint: no shard holds it \(files: \['model-00001"):
        load_weights(path, cfg, dtype=np.float32, device=jax.devices("cpu")[0])


def test_unsupported_gemma_features_are_refused_by_name(ckpt):
    _edit_config(ckpt, hidden_activation="gelu")
    with pytest.raises(CheckpointError, match="hidden_activation='gelu'; only 'gelu_pytorch_tanh'"):
        read_config(ckpt)
    _edit_config(ckpt, hidden_activation="gelu_pytorch_tanh", use_bidirectional_attention=True)
    with pytest.raises(CheckpointError, match="use_bidirectional_attention=true is not supported"):
        read_config(ckpt)


def test_transformers_4_style_gemma3_config_is_read_alike(ckpt):
    body = json.loads((ckpt / "config.json").read_text())
    rope = body.pop("rope_parameters")
    body.pop("layer_types")
    body.update(rope_theta=rope[FULL]["rope_theta"], rope_local_base_freq=rope[SLIDING]["rope_theta"],
                rope_scaling={"rope_type": "linear", "factor": 4.0}, sliding_window_pattern=3)
    (ckpt / "config.json").write_text(json.dumps(body))
    assert read_config(ckpt) == CFG3


def test_the_text_tower_of_a_multimodal_gemma3_checkpoint_loads(ckpt):
    # Gemma3ForConditionalGeneration (the 4B/12B releases): config.json nests the text config and
    # transformers 5.x names the text weights model.language_model.*
    from safetensors.numpy import save_file

    cfg, seed = GEMMA_REFERENCE_MODELS[NAME]
    text = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gemma3", "architectures":
                                                  ["Gemma3ForConditionalGeneration"], "text_config": text}))
    state = {k.replace("model.", "model.language_model.", 1): v
             for k, v in hf_state_dict(init_params_numpy(cfg, seed), cfg).items()}
    state["model.vision_tower.patch.weight"] = np.zeros((2, 2), np.float32)  # not the text model's
    save_file(state, str(ckpt / "model.safetensors"))
    assert read_config(ckpt) == cfg
    got = load_weights(ckpt, cfg, dtype=np.float32, device=jax.devices("cpu")[0])
    want = init_params_numpy(cfg, seed)
    np.testing.assert_array_equal(np.asarray(got["layers"]["q_norm"]), want["layers"]["q_norm"])
    np.testing.assert_array_equal(np.asarray(got["embed"]), want["embed"])
