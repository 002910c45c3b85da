"""Prefill chunks whose inputs and outputs stay at fixed device addresses, so that their CUDA
graph is launched as recorded instead of being updated first.

XLA runs a program's kernels as CUDA graphs recorded with the addresses of its arguments,
outputs and temporary buffer. When one has moved since the last run, the host updates the graph
before launching it: 0.8-1.0 ms of host time on the H100 host for the draft's 10741-token chunk,
the first device work of a speculative request (session 19, ``scripts/probe_graph_updates.py``). The KV cache already stays in place (donated, aliased:
``model.chunk_jit``); the chunk's inputs (a new host-to-device copy per request) and its logits
and query rows (new outputs) did not.

:class:`FixedBuffers` keeps the previous call's input array per chunk index and row count, and
its logits and query rows per chunk index (and queries or not; their shapes do not depend on the
rows), and gives them back to the next call as donated buffers:

* the inputs: the new copy goes into the kept array with a one-copy program
  (:data:`_fill`, the kept array donated and aliased to its output);
* the logits and query rows: the chunk program of :func:`spectrace.engines.model.chunk_into_jit`
  takes them as a donated argument it does not read, so XLA writes its new outputs there.

The price is the lifetime of those arrays: a chunk's inputs, logits and query rows are deleted
when the engine runs the same chunk again (JAX raises on reading them then). So this is for an
engine whose results are read within the request, the speculative engine's draft
(``$SPECTRACE_FIXED_BUFFERS=spec``, :func:`enabled`).

Off by default: on an H200 (session 20, ``docs/performance.md``) the probe saw no updates with
it, but the request was not faster (speculative TTFT 1.024x, 1.005..1.043, n=8, noisy); it is
kept for a second measurement.
"""

from __future__ import annotations

import jax

from spectrace.engines.host import switched_engines

#: The kept array's buffer takes the new inputs: ``dst`` donated, the output aliased to it, so
#: XLA copies ``src`` into it (``keep_unused``: ``dst`` is never read, and JAX would drop it).
_fill = jax.jit(lambda dst, src: src, donate_argnums=0, keep_unused=True)

#: Engines (by ``BaseEngine.name``) whose chunks use fixed buffers when the variable is unset.
DEFAULT_ENGINES = ""


def enabled(name: str) -> bool:
    """Whether engine ``name``'s chunks use fixed buffers: ``$SPECTRACE_FIXED_BUFFERS``, a comma
    list of engine names (``engines.host.switched_engines``), else :data:`DEFAULT_ENGINES`."""
    return name in switched_engines("SPECTRACE_FIXED_BUFFERS", DEFAULT_ENGINES)


class FixedBuffers:
    """Per-chunk kept arrays of one engine (see the module docstring)."""

    def __init__(self):
        self._inputs: dict[tuple, object] = {}    # (index, rows) -> [2, B, rows] int32
        self._outputs: dict[tuple, tuple] = {}    # (index, queries) -> (logits,) or (logits, q_rows)

    def call(self, fn, fn_into, params, cache, inputs, *, index: int, fresh: bool, queries: bool):
        """``fn(params, cache, inputs, fresh=fresh)`` with ``inputs`` [2, B, T] copied into the
        chunk's kept input array and the outputs written over its kept logits and query rows.

        ``fn``: the chunk function (nothing kept yet for this chunk); ``fn_into``: the same with a
        donated ``into`` argument (``model.chunk_into_jit``). Returns ``(inputs used, (logits,
        cache, q_rows))``. A new row count starts a kept input array of its own (one per
        compiled shape, as the programs are).
        """
        in_key, out_key = (index, int(inputs.shape[-1])), (index, queries)
        old = self._inputs.pop(in_key, None)
        if old is not None:
            inputs = _fill(old, inputs)
        into = self._outputs.pop(out_key, None)
        out = fn(params, cache, inputs, fresh=fresh) if into is None else fn_into(params, cache, inputs, into,
                                                                                  fresh=fresh)
        self._inputs[in_key] = inputs
        self._outputs[out_key] = (out[0],) if out[2] is None else (out[0], out[2])
        return inputs, out

    def clear(self) -> None:
        """Drop the kept arrays (their device memory goes when no result holds them)."""
        self._inputs.clear()
        self._outputs.clear()
