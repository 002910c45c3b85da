"""Tensor parallelism over a device group: a 1-D ``jax.sharding.Mesh`` and ``NamedSharding`` layouts.

An engine given more than one device lays its weights out Megatron-style over the mesh axis
``"tp"``: query heads of ``wq``/``wo`` (axis N), KV heads of ``wk``/``wv`` and of the KV cache
(axis K), and the MLP's F axis of ``w_gate``/``w_up``/``w_down``; everything else (embeddings,
norms, LM head, positions) is replicated. The compiled functions are the single-device ones:
``jax.jit`` sees sharded inputs and XLA's SPMD partitioner (GSPMD) inserts the collectives
(an all-reduce after ``wo`` and after ``w_down``). Nothing here runs for a one-device engine.

Fused projections (``EngineOptions(qkv="fused")``) are turned off on a mesh: a column split of
the concatenated ``Q|K|V`` (or ``gate|up``) weight would not fall on head boundaries, so each
device would hold pieces of different projections and XLA would reshuffle them on every call.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "tp"

# Per-layer weight name -> the spec of its (unstacked) shape; absent names are replicated.
_LAYER_SPECS = {
    "wq": P(None, AXIS, None),        # [D, N, H]
    "wk": P(None, AXIS, None),        # [D, K, H]
    "wv": P(None, AXIS, None),        # [D, K, H]
    "wo": P(AXIS, None, None),        # [N, H, D]
    "w_gate": P(None, AXIS),          # [D, F]
    "w_up": P(None, AXIS),            # [D, F]
    "w_down": P(AXIS, None),          # [F, D]
}
CACHE_KV = P(None, None, AXIS, None)  # [B, S, K, H]: split by KV head


def make_mesh(devices) -> Mesh:
    """A 1-D mesh over ``devices`` (distinct, one platform) for tensor parallelism."""
    devices = list(devices)
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices={devices!r} names a device twice; give each device once")
    platforms = {d.platform for d in devices}
    if len(platforms) != 1:
        raise ValueError(f"devices={devices!r} mixes platforms {sorted(platforms)}; a mesh is one platform")
    return Mesh(np.asarray(devices), (AXIS,))


def check_divides(cfg, n: int) -> None:
    """Heads and MLP width must split evenly over ``n`` devices; the error names both numbers."""
    for what, value in (("n_heads", cfg.n_heads), ("n_kv_heads", cfg.n_kv_heads), ("ffn_dim", cfg.ffn_dim)):
        if value % n:
            raise ValueError(f"{what}={value} is not divisible by the {n} devices of the group: tensor "
                             f"parallelism splits it evenly; use a group size that divides {value}")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def mesh_options(options):
    """``options`` for a mesh engine: separate projections (see the module docstring)."""
    return dataclasses.replace(options, qkv="separate") if options.qkv == "fused" else options


def param_shardings(params: dict, mesh: Mesh) -> dict:
    """The ``NamedSharding`` of every leaf of an engine's per-layer params (``params.for_options``)."""
    rep = replicated(mesh)
    out = {k: jax.tree_util.tree_map(lambda _: rep, v) for k, v in params.items() if k != "layers"}
    out["layers"] = tuple({name: NamedSharding(mesh, _LAYER_SPECS.get(name, P())) for name in lp}
                          for lp in params["layers"])
    return out


def stacked_shardings(cfg, mesh: Mesh) -> dict:
    """The ``NamedSharding`` of every leaf of the stacked layout (``params.param_shapes``: layer
    weights ``[L, ...]``): where weights are generated or loaded, so that each device only ever
    holds its slice (a 70B in bf16 is 141 GB: whole on every device first, it fits on none)."""
    from spectrace.engines.params import param_shapes

    rep = replicated(mesh)
    shapes = param_shapes(cfg)
    out = {k: rep for k in shapes if k != "layers"}
    out["layers"] = {name: NamedSharding(mesh, P(None, *_LAYER_SPECS[name]) if name in _LAYER_SPECS else P())
                     for name in shapes["layers"]}
    return out


def shard_params(params: dict, mesh: Mesh) -> dict:
    """``params`` placed over the mesh (each device gets its slice of the split weights)."""
    return jax.device_put(params, param_shardings(params, mesh))


def cache_shardings(n_layers: int, mesh: Mesh):
    """The KV cache's layout as a ``KVCache`` of shardings: keys/values by KV head, the rest replicated."""
    from spectrace.engines.cache import KVCache

    kv = NamedSharding(mesh, CACHE_KV)
    rep = replicated(mesh)
    return KVCache(k=(kv,) * n_layers, v=(kv,) * n_layers, pos=rep, length=rep)


def tensor_parallel(cfg, params: dict, options, devices):
    """(mesh, options, params over the mesh, the replicated sharding inputs go to) for an engine."""
    from spectrace.engines.params import for_options

    check_divides(cfg, len(devices))
    mesh = make_mesh(devices)
    options = mesh_options(options)
    return mesh, options, shard_params(for_options(params, cfg, options), mesh), replicated(mesh)
