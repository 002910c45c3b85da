"""SwiGLU in the gate/up GEMM's epilogue: a prefill chunk's MLP writes ``silu(gate) * up`` once.

XLA computes a chunk's MLP as a gate|up GEMM writing ``[T, 2F]`` and then a fusion reading all of
it back to write ``silu(gate) * up`` ``[T, F]``. That second kernel moves 1.5x the GEMM's output
at the bandwidth floor: 2.5 ms of the 1B draft's 10741-token chunk and 0.94 ms of the 8B's pruned
chunk on an H100 (docs/performance.md), ~6 ms of the 8B's full prefill on an H200. Only a GEMM
that applies SwiGLU to its accumulator before storing removes it (cuBLAS's epilogues have no
gated activation).

:func:`swiglu_gemm` is JAX's Hopper matmul example (``jax.experimental.pallas.ops.gpu.
hopper_matmul_mgpu``: TMA loads, warp specialization, two compute warpgroups splitting the
rows, a persistent grid) with two changes:

* the weight's columns come interleaved in blocks of :data:`BLOCK` (gate block j, then up block
  j: :func:`interleave`), so one CTA's accumulator ``[tile_m, 2 * BLOCK]`` holds matching gate and
  up columns;
* the epilogue stores ``silu(g) * u``, computed in float32 and rounded once, into ``BLOCK``
  output columns.

The interleaved weight is the engine's ``w_gate_up_il`` (``EngineOptions(mlp="epilogue")``,
``engines.params``); wherever the kernel does not apply (CPU, float32, a decode step's rows,
rows that do not tile, Gemma's GELU) the same weight goes through XLA's GEMM and
:func:`split_gate_up`, a strided view the multiply fusion reads in place. Both forms compute the
same function (tested on CPU; the kernel against XLA on the GPU by ``scripts/probe_swiglu_gemm.py``).

``$SPECTRACE_MLP_EPILOGUE`` (a comma list of engine names, :func:`options_for`) turns it on per
engine for side-by-side measurement. Off by default: on an H100 (session 22, docs/performance.md)
it is 0.90-0.95x XLA's GEMM + multiply alone and saves 1.48 ms of device time in the draft's
chunk alone, yet the speculative pipeline and the 8B's full prefill are no faster (perhaps the
GPU's power cap, not yet measured: ``scripts/probe_mlp_power.py``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import replace

import jax
import jax.numpy as jnp
from jax import lax

from spectrace.engines.host import switched_engines

#: Gate (and up) columns per interleaved block: half the kernel's weight tile.
BLOCK = 64


@dataclasses.dataclass(frozen=True)
class Tiles:
    """One kernel configuration (the CTA computes ``2 * tile_m`` rows by ``tile_n`` weight columns)."""

    tile_m: int = 128    # rows per compute warpgroup (two of them)
    tile_n: int = 2 * BLOCK  # weight columns per CTA: tile_n // 2 gate and as many up columns
    tile_k: int = 64
    steps: int = 3       # pipeline stages in shared memory
    minor: str = "N"     # planar_snake's minor grid dimension
    width: int = 8       # planar_snake's tile width
    epi_m: int = 64
    epi_n: int = 64


#: The configuration the engines use (``scripts/probe_swiglu_gemm.py`` compares others). On an
#: H100 (session 22, ``docs/evidence/h100-session22/probe_swiglu_gemm_4stages.txt``) 3 stages took the
#: three chunk shapes in 0.898 / 0.947 / 0.951 of XLA's GEMM + multiply, 4 stages in 0.929 /
#: 1.010 / 0.949: the 8B's full chunk was slower than XLA's with 4.
TILES = Tiles()

#: Engines (``BaseEngine.name``) with the epilogue when ``$SPECTRACE_MLP_EPILOGUE`` is unset.
DEFAULT_ENGINES = ""


def options_for(options, name: str):
    """``options`` with ``mlp="epilogue"`` when engine ``name`` is listed in
    ``$SPECTRACE_MLP_EPILOGUE`` (a comma list of engine names, ``engines.host.switched_engines``),
    else as given (an ``mlp="xla"`` set by the caller cannot be told from the default: a listed
    engine gets the epilogue)."""
    on = name in switched_engines("SPECTRACE_MLP_EPILOGUE", DEFAULT_ENGINES)
    return replace(options, mlp="epilogue") if on else options


def interleave(w_gate, w_up, block: int = BLOCK):
    """[..., D, F] x 2 -> [..., D, 2F]: gate block j (``block`` columns), then up block j, for every j."""
    *lead, D, F = w_gate.shape
    if F % block:
        raise ValueError(f"the MLP width F={F} is not a multiple of the interleaved block {block}")
    stacked = jnp.stack([w_gate.reshape(*lead, D, F // block, block), w_up.reshape(*lead, D, F // block, block)],
                        axis=-2)                                                     # [..., D, F/b, 2, b]
    return stacked.reshape(*lead, D, 2 * F)                                          # [..., D, 2F]


def split_gate_up(gu, block: int = BLOCK):
    """An interleaved product [..., 2F] (or weight [..., D, 2F]) -> gate, up [..., F] each."""
    *lead, F2 = gu.shape
    blocks = gu.reshape(*lead, F2 // (2 * block), 2, block)                         # [..., F/b, 2, b]
    return blocks[..., 0, :].reshape(*lead, F2 // 2), blocks[..., 1, :].reshape(*lead, F2 // 2)


#: CTAs of 128 rows on the same interleaved blocks, for rows that are a multiple of 128 but not of
#: :data:`TILES`' 256. Not taken by :func:`tiles_for`: 1.08-1.18x XLA's GEMM + multiply on an H100
#: (session 22, with 4 stages), so such chunks keep XLA's path.
TILES_128 = Tiles(tile_m=64, steps=4)


def tiles_for(x, w, act) -> Tiles | None:
    """The configuration :func:`swiglu_gemm` takes ``act(x @ gate) * (x @ up)`` with, for x
    [B, T, D] and the interleaved w [D, 2F], or None (XLA's path): SiLU, bfloat16, a Hopper GPU
    (the process's first device: engines on one GPU kind), and shapes that tile (rows by 256: a
    prefill chunk's, never a decode step's)."""
    if act is not jax.nn.silu or x.dtype != jnp.bfloat16 or w.dtype != jnp.bfloat16:
        return None
    rows, t = x.shape[0] * x.shape[1], TILES
    if (t.tile_n == 2 * BLOCK and not rows % (2 * t.tile_m) and not x.shape[-1] % t.tile_k
            and not w.shape[-1] % t.tile_n):
        return t if _hopper() else None
    return None


def _sms() -> int:
    """The persistent grid's size: one CTA per SM (the CPU's interpret mode: 132, an H100's)."""
    return getattr(jax.devices()[0], "core_count", 132)


@functools.cache
def _hopper() -> bool:
    dev = jax.devices()[0]
    return dev.platform == "gpu" and getattr(dev, "compute_capability", "") == "9.0"


def swiglu_gemm(x, w, tiles: Tiles = TILES, *, interpret=None):
    """silu(x @ gate) * (x @ up) for x [M, D] bfloat16 and :func:`interleave`'s w [D, 2F] -> [M, F].

    ``interpret``: Pallas's GPU interpret mode (``jax._src.pallas.mosaic_gpu.interpret.params.
    InterpretGPUParams()`` in jax 0.10.2), to run the kernel on the CPU (the tests)."""
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    M, D = x.shape
    t = tiles
    half = t.tile_n // 2
    cta_m = 2 * t.tile_m
    if M % cta_m or w.shape[1] % t.tile_n or D % t.tile_k or half % t.epi_n or t.tile_m % t.epi_m:
        raise ValueError(f"x {x.shape} and w {w.shape} do not tile by {t}")
    m_iters, n_iters, k_iters = M // cta_m, w.shape[1] // t.tile_n, D // t.tile_k
    dtype = x.dtype
    item = jnp.dtype(dtype).itemsize
    swz = plgpu.find_swizzle(t.tile_k * item * 8)
    transforms = (plgpu.TilingTransform((8, swz // item)), plgpu.SwizzleTransform(swz))
    out_swz = plgpu.find_swizzle(t.epi_n * item * 8)
    out_transforms = (plgpu.TilingTransform((8, out_swz // item)), plgpu.SwizzleTransform(out_swz))
    minor = 1 if t.minor == "N" else 0                                               # planar_snake's axis
    n_epi = half // t.epi_n

    def swiglu_gemm_kernel(a_gmem, b_gmem, out_gmem):  # its name is the kernel's in profiles
        def pipeline(body, context):
            return plgpu.emit_pipeline_warp_specialized(
                body, grid=(k_iters,), memory_registers=40,
                in_specs=[plgpu.BlockSpec((cta_m, t.tile_k), lambda k: (0, k), transforms=transforms,
                                          memory_space=plgpu.SMEM),
                          plgpu.BlockSpec((t.tile_k, t.tile_n), lambda k: (k, 0), transforms=transforms,
                                          memory_space=plgpu.SMEM)],
                wg_axis="wg", num_compute_wgs=2, max_concurrent_steps=t.steps, compute_context=context)

        ignore = lambda *_, **__: None  # noqa: E731 - allocations do not depend on the bodies

        @functools.partial(pl.run_scoped, allocs=pipeline(ignore, ignore).get_allocations(a_gmem, b_gmem),
                           out_smem=plgpu.SMEM((2, 2, t.epi_m, t.epi_n), dtype, transforms=out_transforms),
                           collective_axes="wg")
        def _scope(allocs, out_smem):
            wg = lax.axis_index("wg")

            @plgpu.nd_loop((m_iters * n_iters,), collective_axes="cluster_grid")
            def _tile(info):
                (lin,) = info.index
                m_idx, n_idx = plgpu.planar_snake(lin, (m_iters, n_iters), minor, t.width)
                rows = pl.ds(m_idx * cta_m, cta_m)
                wg_rows = pl.ds(wg * t.tile_m, t.tile_m)
                out = out_gmem.at[rows, pl.ds(n_idx * half, half)].at[wg_rows, :]    # [tile_m, half]

                def context(run):
                    @functools.partial(pl.run_scoped, acc_ref=plgpu.ACC((t.tile_m, t.tile_n), jnp.float32))
                    def _acc(acc_ref):
                        run(acc_ref)
                        acc = acc_ref[...]                                           # [tile_m, tile_n] f32
                        plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                        for mi in range(t.tile_m // t.epi_m):
                            for ni in range(n_epi):
                                ms, ns = slice(mi * t.epi_m, (mi + 1) * t.epi_m), slice(ni * t.epi_n, (ni + 1) * t.epi_n)
                                g = acc[ms, ns]                                       # [epi_m, epi_n] gate
                                u = acc[ms, half + ns.start: half + ns.stop]          # [epi_m, epi_n] up
                                slot = (mi * n_epi + ni) % 2
                                plgpu.wait_smem_to_gmem(1, wait_read_only=True)
                                out_smem[wg, slot] = (g * jax.nn.sigmoid(g) * u).astype(dtype)
                                plgpu.commit_smem()
                                plgpu.copy_smem_to_gmem(out_smem.at[wg, slot], out.at[ms, ns])

                def mma(idxs, a_smem, b_smem, acc_ref):
                    plgpu.wgmma(acc_ref, a_smem.at[wg_rows], b_smem)
                    plgpu.wgmma_wait(0)
                    return acc_ref

                pipeline(mma, context)(a_gmem.at[rows, :], b_gmem.at[:, pl.ds(n_idx * t.tile_n, t.tile_n)],
                                       allocations=allocs)

        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

    f = plgpu.kernel(swiglu_gemm_kernel, out_type=jax.ShapeDtypeStruct((M, w.shape[1] // 2), dtype), grid=(min(_sms(), m_iters * n_iters),),
                     grid_names=("cluster_grid",), cluster=(1,), cluster_names=("cluster",), num_threads=3,
                     thread_name="wg", interpret=interpret,
                     compiler_params=plgpu.CompilerParams(lowering_semantics=plgpu.LoweringSemantics.Warpgroup))
    return f(x, w)


def gated(x, w, act):
    """act(gate) * up [B, T, F] for x [B, T, D] and the interleaved w [D, 2F]: the kernel where it
    :func:`tiles_for` takes, else XLA's GEMM and :func:`split_gate_up` (``models.common.gated_mlp``)."""
    from spectrace.engines.models.common import einsum

    tiles = tiles_for(x, w, act)
    if tiles is not None:
        B, T, D = x.shape
        return swiglu_gemm(x.reshape(B * T, D), w, tiles).reshape(B, T, -1)        # [B, T, F]
    gate, up = split_gate_up(einsum("BTD,DE->BTE", x, w))                            # [B, T, F] x 2
    return act(gate) * up
