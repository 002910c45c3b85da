"""Which programs of the speculative pipeline re-record their CUDA graph, and what it costs the host.

XLA runs a program's kernels as CUDA graphs (command buffers) recorded with the addresses of the
program's buffers: its arguments, its outputs and its temporary buffer. When one of them has
moved since the last run, the host updates the graph before launching it (``command_buffer::update``,
then ``cuGraphLaunch``). The draft's 10741-token chunk
is the first device work of a request, so its call is on the speculative TTFT's critical path:
session 17's ``probe_dispatch.py`` (the chunk alone, called in a loop) saw its first kernel
start ~1.75 ms after the call, 0.67 ms of it the update and 1.13 ms ``cuGraphLaunch``.

This profiles ``PROBE_RUNS`` whole requests (device scoring, no baseline, as the benchmarks run
them, after two warm-ups) and prints, per XLA module, its runs, its graph launches (a loop run
from the host launches its body's graph every step), how many updates came before them and the
mean host time of an update, a launch and a graph's execute call; then, per request,
how long after the draft chunk's span began its first kernel started. ``PROBE_POINTERS=1`` also
prints the device addresses of every chunk call's inputs and outputs.

``PROBE_ALONE=1`` instead calls the draft's chunk program alone ``PROBE_RUNS`` times with the same
input array, each call's outputs dropped and waited for before the next, so that its parameters
and outputs can keep their addresses (``PROBE_POINTERS=1`` shows whether they do): an update
there then means the program's temporary buffer moved.

    . scripts/device_env.sh && python3 scripts/probe_graph_updates.py
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict

from spectrace import tracer
from spectrace.engines.speculative import SpecPrefillEngine
from spectrace.engines.tokenizer import exact_prompt
from spectrace.tracer import xplane

RUNS = int(os.environ.get("PROBE_RUNS", "4"))
BASE = os.environ.get("PROBE_BASE", "llama-3.1-8b")
DRAFT = os.environ.get("PROBE_DRAFT", "llama-3.2-1b")
PROMPT = int(os.environ.get("PROBE_LEN", "10741"))
PSL = int(os.environ.get("PROBE_PSL", "16384"))
HOST_EVENTS = ("command_buffer::update", "command_buffer::execute", "cuGraphLaunch")
POINTERS = os.environ.get("PROBE_POINTERS", "") == "1"
ALONE = os.environ.get("PROBE_ALONE", "") == "1"


def _log_pointers(log: list) -> None:
    """Record, for every chunk program call, the device addresses of its inputs and outputs
    (``PROBE_POINTERS=1``): if they repeat from request to request and the graph still updates,
    what moved is the program's temporary buffer, which Python cannot see."""
    from spectrace.engines import model

    def logged(jit):
        def wrapped(xla):
            fn = jit(xla)

            def call(params, cache, inputs, *a, **k):
                out = fn(params, cache, inputs, *a, **k)
                ptr = [x.unsafe_buffer_pointer() for x in (inputs, out[0], out[1].k[0], out[1].pos)]
                if out[2] is not None:
                    ptr.append(out[2].unsafe_buffer_pointer())
                log.append((inputs.shape[2], ptr))
                return out
            return call
        return wrapped
    # Both chunk programs: the plain one and the fixed-address one (engines.fixed_buffers).
    model.chunk_jit, model.chunk_into_jit = logged(model.chunk_jit), logged(model.chunk_into_jit)


def _events(prof):
    """(host events by line, device kernel starts), each event ``(name, start_ns, dur_ns)``."""
    lines, device = [], []
    for path in prof.paths:
        for plane in xplane.read_xplane(path).planes:
            for _, events in plane.lines:
                if plane.name.startswith("/device:"):
                    device.extend(s for name, s, _, _ in events if not name.startswith("Memcpy"))
                else:
                    lines.append([(n, s, d) for n, s, d, _ in events])
    return lines, sorted(device)


def _requests(log: list):
    """Profile ``RUNS`` requests of the 8B/1B pipeline; returns (profile, the draft's device kind)."""
    spec = SpecPrefillEngine.from_pretrained(DRAFT, base=BASE, prefill_seq_len=PSL, ctx_len=PROMPT + 64,
                                             keep=0.10, scoring="device")
    prompt = exact_prompt(spec.base.tokenizer, PROMPT)
    tracer.configure(enabled=True, exporter="none")
    if POINTERS:
        _log_pointers(log)
    for _ in range(2):
        spec.run(prompt, gen_len=8, baseline=False)
    with xplane.profile(tempfile.mkdtemp()) as prof:
        for _ in range(RUNS):
            spec.run(prompt, gen_len=8, baseline=False)
    return prof, f"{DRAFT} + {BASE} on {spec.draft.devices[0].device_kind}"


def _alone(log: list):
    """Profile ``RUNS`` calls of the draft's chunk program alone, every buffer held still."""
    import jax
    from probe_split_chunk import MODEL, chunk_inputs, draft_and_prompt

    from spectrace.engines.config import FIT_MULTIPLE

    if POINTERS:  # before the engine makes its chunk function
        _log_pointers(log)
    e, ids, fn = draft_and_prompt()
    rows = -(len(ids) // -FIT_MULTIPLE) * FIT_MULTIPLE
    args = jax.device_put(chunk_inputs(ids, 0, len(ids), rows), e.device)

    def call():
        out = fn(e.params, e.cache, args, fresh=True)
        jax.block_until_ready(out)
        e.cache = out[1]
        del out  # the next call's outputs can take these outputs' places
    for _ in range(3):
        call()
    with xplane.profile(tempfile.mkdtemp()) as prof:
        for _ in range(RUNS):
            call()
    return prof, f"{MODEL} on {e.device.device_kind}"


def main() -> None:
    log = []
    prof, where = _alone(log) if ALONE else _requests(log)
    if POINTERS:
        print("chunk calls: rows, then the addresses of inputs, logits, cache k[0], cache pos (, queries) mod 2**32")
        for rows, ptr in log:
            print(f"  {rows:6d} " + " ".join(f"{p % 2**32:10x}" for p in ptr))
    lines, device = _events(prof)
    runs = defaultdict(int)
    stats = defaultdict(lambda: defaultdict(list))              # module -> host event -> [ns]
    chunks = []
    for events in lines:
        modules = [(n.split(":")[0], s, s + d) for n, s, d in events if n.endswith(":XLA GPU module")]
        for m, _, _ in modules:
            runs[m] += 1
        for name, start, dur in events:
            if name == "prefill.chunk":
                chunks.append(start)
            key = next((k for k in HOST_EVENTS if name.startswith(k)), None)
            if key is None:
                continue
            owner = next((m for m, a, b in modules if a <= start < b), "?")
            stats[owner][key].append(dur)
    what = "calls of the draft's chunk alone" if ALONE else "requests (device scoring, no baseline)"
    print(f"{where}: {RUNS} profiled {what}, {PROMPT} tokens")
    print(f"{'module':<34} {'runs':>5} {'graphs':>7} {'updates':>8} {'update ms':>10} {'launch ms':>10} "
          f"{'execute ms':>11}")
    for m in sorted(runs, key=lambda m: -sum(stats[m]["command_buffer::execute"] or [0])):
        s = stats[m]

        def mean(k):
            return f"{sum(s[k]) / len(s[k]) / 1e6:.3f}" if s[k] else "-"
        print(f"{m[:34]:<34} {runs[m]:>5} {len(s['command_buffer::execute']):>7} {len(s['command_buffer::update']):>8} "
              f"{mean('command_buffer::update'):>10} {mean('cuGraphLaunch'):>10} {mean('command_buffer::execute'):>11}")
    if chunks:
        chunks.sort()
        print("\nthe draft chunk's first kernel after its span began (the first prefill.chunk of each request):")
        for start in chunks[::2]:  # draft, then the pruned base chunk, per request
            first = next((s for s in device if s >= start), None)
            print(f"  {'-' if first is None else f'{(first - start) / 1e6:.3f} ms'}")


if __name__ == "__main__":
    main()
