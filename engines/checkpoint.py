"""Hugging Face checkpoint directories (Llama, Gemma 2, Gemma 3): reading them into the engine's layout, and writing them.

A checkpoint is ``config.json`` (read through ``transformers.AutoConfig``), weights in
``model.safetensors`` or shards listed by ``model.safetensors.index.json``, and tokenizer files.
Safetensors are read with a small header parser and ``numpy.memmap`` rather than the
``safetensors`` package's numpy loader, because real Llama weights are bfloat16, which numpy
alone cannot name (``ml_dtypes`` can, and comes with JAX).

Every failure names the file and, for weights, the tensor with expected and found shapes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jax
import ml_dtypes
import numpy as np

from spectrace.engines.config import LlamaConfig
from spectrace.engines.models import SUPPORTED_MODEL_TYPES, family
from spectrace.engines.params import param_shapes

# Gemma3ForConditionalGeneration (model_type "gemma3": the 4B/12B/27B releases) is read as its text tower.
_MULTIMODAL = {"gemma3": "Gemma3ForConditionalGeneration"}
SUPPORTED_ARCHITECTURES = tuple(a for _, a in SUPPORTED_MODEL_TYPES.values()) + tuple(_MULTIMODAL.values())
# Where a family's "model." names live in a checkpoint: Gemma 3's multimodal releases nest the
# text model (transformers 4.x wrote "language_model.model.", 5.x writes "model.language_model.").
_PREFIXES = ("model.", "model.language_model.", "language_model.model.")
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}


class CheckpointError(ValueError):
    """A checkpoint directory that exists but does not describe a loadable model."""


def supported_text() -> str:
    """The model_type values (and architectures) the reader accepts, for error messages."""
    rows = [f"{mt!r} ({arch})" for mt, (_, arch) in SUPPORTED_MODEL_TYPES.items()]
    rows += [f"{mt!r} ({arch}, its text tower)" for mt, arch in _MULTIMODAL.items()]
    return ", ".join(rows)


def read_config(path: str | Path):
    """The model config (:class:`LlamaConfig` or :class:`GemmaConfig`) of checkpoint directory ``path``;
    refuses unsupported architectures, naming the model_type and the supported ones."""
    path = Path(path)
    config_file = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing: a checkpoint directory needs config.json")
    raw = _check_config_json(config_file)
    model_type, archs = raw.get("model_type"), raw.get("architectures")
    if model_type not in SUPPORTED_MODEL_TYPES and model_type not in _MULTIMODAL:
        raise CheckpointError(f"{config_file}: unsupported architecture {archs} (model_type={model_type!r}); "
                              f"supported model_type: {supported_text()}")
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - a third-party parser of a user's file; its first line says why
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise CheckpointError(f"{config_file}: transformers cannot read it: {first}") from exc
    archs = list(getattr(hf, "architectures", None) or [])
    if archs and not set(archs) & set(SUPPORTED_ARCHITECTURES):
        raise CheckpointError(f"{config_file}: unsupported architecture {archs} (model_type={model_type!r}); "
                              f"supported model_type: {supported_text()}")
    if model_type in _MULTIMODAL:
        hf = hf.get_text_config()
    if model_type != "llama":
        try:
            return SUPPORTED_MODEL_TYPES[hf.model_type][0].from_hf(hf)
        except (ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{config_file}: {exc}") from exc
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf, flag, False):
            raise CheckpointError(f"{config_file}: {flag}=true is not supported (Llama has no biases)")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise CheckpointError(f"{config_file}: hidden_act={hf.hidden_act!r}; only 'silu' (SwiGLU) is supported")
    try:
        return LlamaConfig.from_hf(hf)
    except ValueError as exc:
        raise CheckpointError(f"{config_file}: {exc}") from exc


_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "num_key_value_heads", "head_dim", "max_position_embeddings")
_TYPES = {**{k: (int,) for k in _POSITIVE_INTS}, "rms_norm_eps": (float, int), "rope_theta": (float, int),
          "tie_word_embeddings": (bool,), "attention_bias": (bool,), "mlp_bias": (bool,),
          "model_type": (str,), "hidden_act": (str,), "architectures": (list,),
          "rope_parameters": (dict,), "rope_scaling": (dict,), "bos_token_id": (int,), "eos_token_id": (int, list),
          "hidden_activation": (str,), "sliding_window": (int,), "query_pre_attn_scalar": (float, int),
          "layer_types": (list,), "final_logit_softcapping": (float, int), "attn_logit_softcapping": (float, int),
          "rope_local_base_freq": (float, int), "text_config": (dict,)}
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_POSITIVE_INTS += ("sliding_window",)


def _check_config_json(config_file: Path) -> dict:
    """Refuse a config.json whose keys have the wrong type, naming the file and the key.

    transformers would refuse most of these too, but in a multi-line message, and some (an
    ``architectures`` that is not a list) as a bare ``TypeError``.
    """
    try:
        raw = json.loads(config_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{config_file}: not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file}: must hold a JSON object, got {type(raw).__name__}")
    for key, types in _TYPES.items():
        if key not in raw or (raw[key] is None and key not in _REQUIRED):
            continue  # absent: transformers' default
        value = raw[key]
        bad = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if not bad and key in _POSITIVE_INTS:
            bad = value <= 0
        if not bad and key == "eos_token_id" and isinstance(value, list):
            bad = not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not bad and key == "architectures":
            bad = not all(isinstance(v, str) for v in value)
        if bad:
            want = ("a positive integer" if key in _POSITIVE_INTS else
                    {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                     list: "a list", dict: "an object"}[types[0]] + (" or a list of them" if list in types[1:] else ""))
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise CheckpointError(f"{config_file}: {key} must be {want}, got {shown}")
    return raw


# ---- safetensors ------------------------------------------------------------------------------
def read_safetensors_header(file: Path) -> tuple[dict, int]:
    """(tensor name -> {dtype, shape, data_offsets}, byte offset of the data section).

    A file cut short, or one whose header is not a safetensors header, is a ``CheckpointError``
    naming the file: a truncated download is the usual cause.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{file}: not a safetensors file (truncated: {size} bytes, shorter than "
                                  "its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if 8 + n > size:
            raise CheckpointError(f"{file}: truncated or not a safetensors file (its header claims {n} bytes; "
                                  f"the file has {size})")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{file}: not a safetensors file (bad JSON header: {exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    for name, info in header.items():
        ok = isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("dtype"), str)
        offsets = info.get("data_offsets") if ok else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets) and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in info["shape"])
        if not ok:
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry "
                                  "(needs dtype, shape and data_offsets)")
        if 8 + n + offsets[1] > size:
            raise CheckpointError(f"{file}: truncated: tensor {name!r} ends at byte {8 + n + offsets[1]}, "
                                  f"the file has {size} bytes")
    return header, 8 + n


def _weight_files(path: Path) -> tuple[dict[str, Path], dict[Path, tuple[dict, int]]]:
    """(HF tensor name -> the safetensors file holding it, the headers parsed to find that out).

    A single file's names come from its header; handing the parsed header on lets the reader
    skip parsing it again (a sharded checkpoint's names come from the index instead).
    """
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: path / fname for name, fname in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise FileNotFoundError(f"{f} is missing: {index.name} lists it as a shard")
        return files, {}
    if single.is_file():
        parsed = read_safetensors_header(single)
        return {name: single for name in parsed[0]}, {single: parsed}
    raise FileNotFoundError(f"no weights in {path}: expected model.safetensors or "
                            "model.safetensors.index.json with its shards")


class _Reader:
    """Memory-maps tensors on demand and checks their shapes (one header parse per file)."""

    def __init__(self, files: dict[str, Path], headers: dict[Path, tuple[dict, int]]):
        self.files = files
        self._headers = dict(headers)

    def get(self, name: str, expected: tuple) -> np.ndarray:
        file = self.files.get(name)
        if file is None:
            files = sorted({f for f in self.files.values()})
            where = f"{files[0]}: tensor {name!r} is missing" if len(files) == 1 else (
                f"tensor {name!r} is missing from the checkpoint: no shard holds it "
                f"(files: {[f.name for f in files]} in {files[0].parent})")
            raise CheckpointError(f"{where}; expected shape {expected}")
        if file not in self._headers:
            self._headers[file] = read_safetensors_header(file)
        header, base = self._headers[file]
        if name not in header:
            raise CheckpointError(f"{file.name}: tensor {name!r} is missing (the index lists it in this file); "
                                  f"expected shape {expected}")
        info = header[name]
        shape = tuple(info["shape"])
        if shape != tuple(expected):
            raise CheckpointError(f"{file.name}: tensor {name!r} has shape {shape}, expected {tuple(expected)} "
                                  "from config.json")
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(f"{file.name}: tensor {name!r} has dtype {info['dtype']}; "
                                  f"supported: {sorted(_DTYPES)}")
        start, end = info["data_offsets"]
        dt = np.dtype(_DTYPES[info["dtype"]])
        if end - start != dt.itemsize * int(np.prod(shape)):
            raise CheckpointError(f"{file.name}: tensor {name!r} spans {end - start} bytes, but {info['dtype']} "
                                  f"{shape} needs {dt.itemsize * int(np.prod(shape))}")
        return np.memmap(file, dtype=dt, mode="r", offset=base + start, shape=shape)


def _hf_layout(cfg, prefix: str = "model."):
    """(our leaf path, HF name template, HF shape, transform HF -> ours) for every weight of
    ``cfg``'s family, with the text model's names under ``prefix``."""
    rows = family(cfg).hf_layout(cfg)
    if prefix == "model.":
        return rows
    return [(ours, prefix + name[len("model."):] if name.startswith("model.") else name, shape, fn)
            for ours, name, shape, fn in rows]


def _prefix_of(names, cfg) -> str:
    """Which of ``_PREFIXES`` the checkpoint's tensor names use (the embedding decides)."""
    if cfg.family == "gemma":
        for prefix in _PREFIXES:
            if prefix + "embed_tokens.weight" in names:
                return prefix
    return "model."


def _leaf(tree: dict, path: str):
    for part in path.split("/"):
        tree = tree[part]
    return tree


def load_weights(path: str | Path, cfg, *, dtype, device) -> dict:
    """The checkpoint's weights in the engine's layout (separate QKV), placed on ``device`` in ``dtype``.

    Layers are stacked into one host buffer per weight, then copied to the device one weight at
    a time, so the host never holds more than one stacked weight beyond the memory-mapped files.
    ``device``: a device, a sharding, or a tree of shardings like ``param_shapes`` (a
    tensor-parallel group: each device receives only its slice).
    """
    path = Path(path)
    reader = _Reader(*_weight_files(path))
    prefix = _prefix_of(reader.files, cfg)
    for name in reader.files:
        if name.endswith(".bias") and name.startswith(prefix):
            raise CheckpointError(f"{reader.files[name].name}: tensor {name!r} is a bias; "
                                  f"{cfg.family.capitalize()} has none")
    shapes = param_shapes(cfg)
    np_dtype = np.dtype(dtype)
    out: dict = {"layers": {}}
    for ours, hf_name, hf_shape, transform in _hf_layout(cfg, prefix):
        target_shape = _leaf(shapes, ours)
        host = np.empty(target_shape, np_dtype)
        if ours.startswith("layers/"):
            for i in range(cfg.n_layers):
                host[i] = transform(reader.get(hf_name.format(i=i), hf_shape))
        else:
            host[...] = transform(reader.get(hf_name, hf_shape))
        value = jax.device_put(host, _leaf(device, ours) if isinstance(device, dict) else device)
        if ours.startswith("layers/"):
            out["layers"][ours.split("/", 1)[1]] = value
        else:
            out[ours] = value
    return out


# ---- writing ----------------------------------------------------------------------------------
def hf_state_dict(params: dict, cfg) -> dict[str, np.ndarray]:
    """Host params (separate layout, numpy) as HF tensor names and shapes (the inverse of loading)."""
    D, N, K, H = cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    inverse = {
        "layers/wq": lambda w: w.reshape(D, N * H).T, "layers/wk": lambda w: w.reshape(D, K * H).T,
        "layers/wv": lambda w: w.reshape(D, K * H).T, "layers/wo": lambda w: w.reshape(N * H, D).T,
        "layers/w_gate": lambda w: w.T, "layers/w_up": lambda w: w.T, "layers/w_down": lambda w: w.T,
        "lm_head": lambda w: w.T,
    }
    state = {}
    for ours, hf_name, _, _ in _hf_layout(cfg):
        value = np.asarray(_leaf(params, ours))
        fn = inverse.get(ours, lambda w: w)
        if ours.startswith("layers/"):
            for i in range(cfg.n_layers):
                state[hf_name.format(i=i)] = np.ascontiguousarray(fn(value[i]))
        else:
            state[hf_name] = np.ascontiguousarray(fn(value))
    return state


def write_config(path: str | Path, cfg, *, torch_dtype: str = "float32") -> None:
    """config.json readable by transformers (Llama: 4.x rope_theta/rope_scaling and 5.x rope_parameters)."""
    body = {"model_type": "llama", **cfg.to_hf_dict(), "torch_dtype": torch_dtype,
            "initializer_range": 0.02, "use_cache": True}
    Path(path, "config.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: str | Path, cfg, params: dict, *, max_shard_bytes: int | None = None) -> Path:
    """Write ``config.json`` and float32 safetensors (sharded with an index past ``max_shard_bytes``).

    Deterministic: the same params give the same bytes. Tokenizer files are written separately.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_config(path, cfg)
    state = {k: v.astype(np.float32) for k, v in hf_state_dict(params, cfg).items()}
    meta = {"format": "pt"}
    if max_shard_bytes is None:
        save_file(state, str(path / "model.safetensors"), metadata=meta)
        return path
    shards: list[dict] = [{}]
    for name, value in state.items():
        if shards[-1] and sum(v.nbytes for v in shards[-1].values()) + value.nbytes > max_shard_bytes:
            shards.append({})
        shards[-1][name] = value
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata=meta)
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": sum(v.nbytes for v in state.values())}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path
