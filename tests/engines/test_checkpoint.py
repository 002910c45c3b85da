"""Loading Hugging Face checkpoint directories, and the errors that name what is wrong."""

from __future__ import annotations

import json
import shutil
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

from spectrace.engines import BaseEngine, CheckpointError, read_config
from spectrace.engines.checkpoint import hf_state_dict, load_weights
from spectrace.engines.params import init_params_numpy
from spectrace.engines.testing_models import REFERENCE_MODELS, write_reference_model

NAME = "gqa_tied_llama3"
CFG, SEED = REFERENCE_MODELS[NAME]
CPU = jax.devices("cpu")[0]


@pytest.fixture
def ckpt(reference_models, tmp_path):
    """A private copy of a small checkpoint the test may damage."""
    dest = tmp_path / "ckpt"
    shutil.copytree(reference_models[NAME], dest)
    return dest


def _edit_config(path, **changes):
    body = json.loads((path / "config.json").read_text())
    body.update(changes)
    (path / "config.json").write_text(json.dumps(body))


def _leaves_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sharded_checkpoint_loads_like_single_file(reference_models, tmp_path):
    sharded = write_reference_model(NAME, tmp_path / "sharded", max_shard_bytes=20_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 2
    single = load_weights(reference_models[NAME], CFG, dtype=np.float32, device=CPU)
    _leaves_equal(load_weights(sharded, CFG, dtype=np.float32, device=CPU), single)


def _write_bf16_safetensors(file, tensors):
    """Safetensors by hand: numpy alone cannot name bfloat16, real Llama weights are bfloat16."""
    header, offset, blobs = {}, 0, []
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value.astype(ml_dtypes.bfloat16)).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_bfloat16_checkpoint_loads(ckpt):
    state = hf_state_dict(init_params_numpy(CFG, SEED), CFG)
    _write_bf16_safetensors(ckpt / "model.safetensors", state)
    params = load_weights(ckpt, CFG, dtype=np.float32, device=CPU)
    expected = state["model.layers.1.self_attn.q_proj.weight"].astype(ml_dtypes.bfloat16).astype(np.float32)
    got = np.asarray(params["layers"]["wq"][1]).reshape(CFG.dim, -1).T
    np.testing.assert_array_equal(got, expected)


def test_transformers_4_style_config_is_read(ckpt):
    body = json.loads((ckpt / "config.json").read_text())
    rope = body.pop("rope_parameters")
    body["rope_theta"] = rope.pop("rope_theta")
    body["rope_scaling"] = rope
    (ckpt / "config.json").write_text(json.dumps(body))
    assert read_config(ckpt) == CFG


def test_missing_config_json(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing"):
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a checkpoint directory nor a preset"):
        BaseEngine.from_pretrained(tmp_path / "nope", prefill_seq_len=8, ctx_len=32)


def test_missing_safetensors(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights in .*model\.safetensors or model\.safetensors\.index\.json"):
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)


def test_missing_shard(tmp_path):
    sharded = write_reference_model(NAME, tmp_path / "sharded", max_shard_bytes=20_000)
    victim = sorted(sharded.glob("model-*-of-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=f"{victim.name} is missing.*index"):
        load_weights(sharded, CFG, dtype=np.float32, device=CPU)


def test_unsupported_architecture(ckpt):
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                   "n_embd": 64, "n_layer": 2, "n_head": 4}))
    with pytest.raises(CheckpointError, match=r"config\.json: unsupported architecture \['GPT2LMHeadModel'\]"):
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)


def test_llama_with_biases_is_refused(ckpt):
    _edit_config(ckpt, attention_bias=True)
    with pytest.raises(CheckpointError, match="attention_bias=true is not supported"):
        read_config(ckpt)


def test_shape_mismatch_names_file_tensor_and_shapes(ckpt):
    _edit_config(ckpt, intermediate_size=CFG.ffn_dim + 8)
    with pytest.raises(CheckpointError) as err:
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)
    msg = str(err.value)
    assert "model.safetensors" in msg and "'model.layers.0.mlp.gate_proj.weight'" in msg
    assert f"has shape ({CFG.ffn_dim}, {CFG.dim}), expected ({CFG.ffn_dim + 8}, {CFG.dim})" in msg


def test_missing_tensor_is_named(ckpt):
    from safetensors.numpy import save_file

    state = hf_state_dict(init_params_numpy(CFG, SEED), CFG)
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.down_proj\.weight' is missing"):
        load_weights(ckpt, CFG, dtype=np.float32, device=CPU)


def test_not_a_safetensors_file(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00oops!")
    with pytest.raises(CheckpointError, match="model.safetensors: not a safetensors file"):
        load_weights(ckpt, CFG, dtype=np.float32, device=CPU)


def test_missing_tokenizer(ckpt):
    for f in ckpt.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        BaseEngine.from_pretrained(ckpt, prefill_seq_len=8, ctx_len=32)


@pytest.mark.parametrize("shard_bytes", [None, 20_000])
def test_each_safetensors_header_is_parsed_once(reference_models, tmp_path, monkeypatch, shard_bytes):
    from spectrace.engines import checkpoint

    path = reference_models[NAME] if shard_bytes is None else write_reference_model(
        NAME, tmp_path / "sharded", max_shard_bytes=shard_bytes)
    parsed = []
    real = checkpoint.read_safetensors_header
    monkeypatch.setattr(checkpoint, "read_safetensors_header", lambda f: parsed.append(f.name) or real(f))
    load_weights(path, CFG, dtype=np.float32, device=CPU)
    assert sorted(parsed) == sorted(f.name for f in path.glob("*.safetensors"))
