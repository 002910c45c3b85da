"""The engines' host boundary: recorded host<->device copies, the tracer window-or-span choice, and
which device, dtype, per-program XLA options and per-engine switches an engine gets.

Every copy goes through :func:`_h2d` or :func:`to_host`, so its bytes and time land under a
binding category on the enclosing span (DESIGN.md), and a d2h copy times only the copy.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from spectrace import tracer


def _window_or_span(window: str | None, fallback: str, **attributes):
    """A window when the caller names one; else a plain span (the caller's window encloses it)."""
    return tracer.window(window, **attributes) if window else tracer.span(fallback, **attributes)


def _h2d(device, arrays, binding: str = "other", *, wait: bool = True, dst: str = ""):
    """Place host arrays on the device as one recorded transfer.

    ``wait=False`` records the bytes but not the copy's time (only its enqueueing): for a few
    bytes that the next program reads anyway, where waiting would add a host round trip
    (~0.5 ms on the H100 host, ``scripts/probe_host.py``) to the TTFT being measured.
    ``dst``: the engine's device group label (``BaseEngine.where``) for the transfer record.
    """
    nbytes = sum(a.nbytes for a in arrays)
    with tracer.transfer(binding, "h2d", nbytes, dst=dst):
        placed = jax.device_put(arrays, device)
        if wait:
            jax.block_until_ready(placed)
    return placed


def prefetch(*arrays) -> None:
    """Queue the device-to-host copy of ``arrays`` right behind the work that computes them.

    Called where a program is dispatched whose result the host reads next (a chunk's logits,
    decode's tokens, the kept indices): the copy then starts when the device finishes, instead
    of after the host has woken from its wait and asked for it, one host round trip less
    (0.5-1 ms on the H200 host: docs/performance.md). :func:`to_host` still records the copy.
    """
    for a in arrays:
        a.copy_to_host_async()


def to_host(array, binding: str = "other", src: str = ""):
    """Copy a device array to the host as one recorded d2h transfer of category ``binding``.

    Waits for the array to be computed first, so the transfer times the copy, not the device
    work that produced it (a look-ahead's 36-byte token read once showed as 11.6 ms: the whole
    look-ahead). After :func:`prefetch` the copy ran behind that work, and the transfer times
    what the host still waits for. ``src``: the engine's device group label (``BaseEngine.where``).
    """
    jax.block_until_ready(array)
    with tracer.transfer(binding, "d2h", array.nbytes, src=src):
        return np.asarray(array)


def _default_dtype(device):
    # float32 where it is cheap and exact (CPU, tests); bfloat16 where matmul units want it.
    return jnp.dtype(jnp.float32) if device.platform == "cpu" else jnp.dtype(jnp.bfloat16)


def _device_group(devices) -> list:
    """``devices`` as a non-empty list (None: the first JAX device)."""
    if devices is None:
        return [jax.devices()[0]]
    if isinstance(devices, (list, tuple)):
        if not devices:
            raise ValueError("devices=[] is empty; give one device, or several for tensor parallelism")
        return list(devices)
    return [devices]


def _placement(group: list, cfg):
    """Where an engine's weights are first placed: the device, or for a group the stacked layout's
    tensor-parallel shardings (after checking that ``cfg``'s heads split over the group, before any
    weight is read), so no device ever holds more than its slice of a split weight."""
    if len(group) == 1:
        return group[0]
    from spectrace.engines import sharding

    sharding.check_divides(cfg, len(group))
    return sharding.stacked_shardings(cfg, sharding.make_mesh(group))


def _group_label(devices) -> str:
    """A device group as a span attribute: ``"cpu:0,1,2,3"``."""
    return f"{devices[0].platform}:" + ",".join(str(d.id) for d in devices)


#: The base engine's prefill chunks on a GPU: cuBLAS rather than Triton GEMMs. Process-wide, Triton
#: off costs more elsewhere (decode 1.74x, the draft window 1.18x), hence per program. Session 7 also
#: turned command buffers (CUDA graphs) off here (H200, n=12 round-robin: pruned base 0.927x, full
#: prefill 0.987x, speculative TTFT 0.980x, docs/evidence/h200-session7/bench_variants_chunk_xla.json),
#: when the host dispatched the pruned chunk after reading scoring's indices, so the graph's update
#: and launch were on the critical path. Since session 11 the pruned chunk is queued behind scoring
#: while the device still runs the draft, and on an H100 with the graphs back (session 18, n=12,
#: docs/evidence/h100-session18/bench_variants_base_cb.txt): speculative TTFT 0.991x (0.984..0.998),
#: pruned base 0.976x, full prefill 0.988x, the same kept tokens, top-1 and 64 greedy tokens.
GPU_BASE_CHUNK_XLA = (("xla_gpu_enable_triton_gemm", False),)


def chunk_xla(name: str, platform: str) -> tuple:
    """XLA options for the prefill-chunk programs of engine ``name`` on ``platform`` (``model.chunk_jit``).

    Default: :data:`GPU_BASE_CHUNK_XLA` for the ``"base"`` engine on a GPU, none otherwise.
    ``$SPECTRACE_CHUNK_XLA`` (``engine:option=value;...``, e.g. ``base:xla_gpu_enable_command_buffer=``)
    replaces the defaults for every engine when set (``""``: none anywhere), for experiments
    (``scripts/bench_variants.py``).
    """
    default = GPU_BASE_CHUNK_XLA if name == "base" and platform in ("gpu", "cuda", "rocm") else ()
    return _program_xla("SPECTRACE_CHUNK_XLA", name, default)


def decode_xla(name: str, platform: str) -> tuple:
    """XLA options for the decode programs (``model.decode_jit``: decode, the draft's look-ahead) of
    engine ``name``: none by default; ``$SPECTRACE_DECODE_XLA`` as ``$SPECTRACE_CHUNK_XLA``."""
    return _program_xla("SPECTRACE_DECODE_XLA", name, ())


def _program_xla(var: str, name: str, default: tuple) -> tuple:
    """``default``, or engine ``name``'s pairs of ``$var`` (``engine:option=value;...``) when it is set."""
    env = os.environ.get(var)
    if env is None:
        return default
    pairs = []
    for item in filter(None, (x.strip() for x in env.split(";"))):
        engine, colon, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not (colon and eq and key):
            raise ValueError(f"{var}={env!r}: {item!r} is not engine:option=value")
        if engine == name:  # XLA wants typed values: booleans and integers as such
            typed = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
            pairs.append((key, typed))
    return tuple(pairs)


#: The engine names per-engine switches take: the speculative engine's draft and base (``BaseEngine.name``).
ENGINE_NAMES = ("spec", "base")


def switched_engines(var: str, default: str = "") -> set[str]:
    """The engines ``$var`` turns a switch on for: a comma list of :data:`ENGINE_NAMES` (``""``: none),
    ``default`` when unset (``$SPECTRACE_FIXED_BUFFERS``, ``$SPECTRACE_MLP_EPILOGUE``). Another name
    raises one line: a misspelt switch would otherwise measure the default."""
    value = os.environ.get(var, default)
    names = {n.strip() for n in value.split(",")} - {""}
    unknown = sorted(names - set(ENGINE_NAMES))
    if unknown:
        raise ValueError(f"{var}={value!r}: unknown engine {unknown[0]!r} (known: {', '.join(ENGINE_NAMES)})")
    return names
