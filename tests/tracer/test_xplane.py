"""XPlane capture, reading, measured alignment and merging, on CPU.

One real ``jax.profiler`` run (module fixture) of a jitted function called inside tracer spans
named ``prefill.chunk``; the other cases use XSpaces built from text protos through jaxlib's
own ``ProfileData.text_proto_to_serialized_xspace``, i.e. exactly what ``jax.profiler`` writes.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from jax.profiler import ProfileData  # noqa: E402

from spectrace import tracer  # noqa: E402
from helpers import profiled_run  # noqa: E402
from spectrace.tracer import _core, clock, xplane  # noqa: E402
from spectrace.tracer.merge import merge  # noqa: E402
from spectrace.tracer.perfetto import read_pftrace, write_pftrace  # noqa: E402

CHUNKS = 4


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """Spans and the XPlane of one profiled run: a window of CHUNKS jitted prefill chunks."""
    def work(step):
        with tracer.window("ttft.baseline", engine="base"):
            for i in range(CHUNKS):
                with tracer.span("prefill.chunk", engine="base", **{"chunk.index": i}):
                    y = step()
                    with tracer.transfer("logits", "d2h", y.nbytes):
                        np.asarray(y)

    return profiled_run(tmp_path_factory.mktemp("prof"), work)


def test_profile_writes_xplane_files_and_mirrors_only_while_running(profiled):
    rec, prof = profiled
    assert prof.paths and all(p.endswith(".xplane.pb") and os.path.isfile(p) for p in prof.paths)
    assert xplane.find_xplane_files(prof.logdir) == prof.paths
    assert _core.STATE.mirror is None
    space = xplane.read_xplane(prof.paths[0])
    assert prof.start_epoch_ns - 10**9 < space.start_ns < prof.end_epoch_ns
    assert space.pid == os.getpid()
    host = next(p for p in space.planes if p.name == "/host:CPU")
    names = [e[0] for _, evs in host.lines for e in evs]
    assert names.count("prefill.chunk") == CHUNKS and names.count("ttft.baseline") == 1


def test_xla_events_fall_inside_their_prefill_chunk_after_alignment(profiled, tmp_path):
    rec, prof = profiled
    path = tmp_path / "trace.pftrace"
    alignment = write_pftrace(path, rec.spans, xplanes=prof.paths)
    assert alignment["pairs"] == CHUNKS + 1
    assert alignment["max_us"] <= 50 and alignment["median_us"] <= alignment["max_us"]
    d = read_pftrace(path)
    assert not d.unclosed and not d.unmatched_ends
    chunks = [s for s in d.slices if s.name == "prefill.chunk" and "spectrace.span_id" in s.args]
    xla = [s for s in d.slices if "hlo_op" in s.args]
    assert len(chunks) == CHUNKS and xla
    assert {d.process_of(s.track) for s in xla}.isdisjoint({os.getpid()})
    for c in chunks:
        inside = [s for s in xla if c.start_ns <= s.start_ns and s.end_ns <= c.end_ns]
        assert inside, f"no XLA op inside chunk {c.args['chunk.index']}"
    (meta,) = d.metadata()
    assert meta["alignment.max_us"] == alignment["max_us"] and meta["alignment.pairs"] == CHUNKS + 1


def test_merge_appends_the_xplane_and_keeps_the_trace_as_written(profiled, tmp_path):
    rec, prof = profiled
    base = tmp_path / "spans.pftrace"
    direct = write_pftrace(tmp_path / "direct.pftrace", rec.spans, xplanes=prof.paths)
    write_pftrace(base, rec.spans)
    out = tmp_path / "merged.pftrace"
    alignment = merge(base, prof.paths, out)
    assert out.read_bytes().startswith(base.read_bytes())
    assert alignment["pairs"] == direct["pairs"]
    assert alignment["offset_us"] == pytest.approx(direct["offset_us"], abs=0.01)
    a, b = read_pftrace(tmp_path / "direct.pftrace"), read_pftrace(out)
    key = lambda d: sorted((s.name, s.start_ns, s.end_ns) for s in d.slices)  # noqa: E731
    assert key(a) == key(b)
    merge(out, prof.paths, out)  # in place, the same file again: new pids, sequences, tracks
    c = read_pftrace(out)
    assert len(c.pids) == len(b.pids) + (len(b.pids) - 1) and len(c.tracks) > len(b.tracks)
    ours = [s for s in b.slices if b.process_of(s.track) == os.getpid()]  # spans and transfers
    assert len(c.slices) == len(b.slices) + (len(b.slices) - len(ours))


def xspace_bytes(start_ns: int, lines: dict, *, pid: int, plane: str = "/host:CPU") -> bytes:
    """A serialized XSpace: ``lines`` maps a line name to ``[(name, offset_ns, dur_ns, stats)]``."""
    names = sorted({e[0] for evs in lines.values() for e in evs})
    stat_names = sorted({k for evs in lines.values() for e in evs for k in e[3]} | {"process_id"})
    eid = {n: i + 1 for i, n in enumerate(names)}
    sid = {n: i + 1 for i, n in enumerate(stat_names)}
    out = [f'planes {{ id: 1 name: "{plane}" stats {{ metadata_id: {sid["process_id"]} int64_value: {pid} }}']
    for i, (line, evs) in enumerate(lines.items()):
        out.append(f'lines {{ id: {i + 1} display_id: {i + 1} name: "{line}" timestamp_ns: 0')
        for name, off, dur, stats in evs:
            st = " ".join(f'stats {{ metadata_id: {sid[k]} ' + (f'int64_value: {v} }}' if isinstance(v, int)
                                                                  else f'str_value: "{v}" }}') for k, v in stats.items())
            out.append(f"events {{ metadata_id: {eid[name]} offset_ps: {off * 1000} duration_ps: {dur * 1000} {st} }}")
        out.append("}")
    out += [f'event_metadata {{ key: {i} value {{ id: {i} name: "{n}" }} }}' for n, i in eid.items()]
    out += [f'stat_metadata {{ key: {i} value {{ id: {i} name: "{n}" }} }}' for n, i in sid.items()]
    out.append("}")
    out.append(f'planes {{ id: 2 name: "Task Environment" stats {{ metadata_id: 1 uint64_value: {start_ns} }} '
               'stat_metadata { key: 1 value { id: 1 name: "profile_start_time" } } }')
    return ProfileData.text_proto_to_serialized_xspace("\n".join(out))


def test_event_time_is_profile_start_plus_offset_and_crossing_events_get_a_lane(tmp_path):
    t0 = 1_700_000_000_000_000_000
    evs = [("fusion.1", 1000, 500, {"hlo_op": "fusion.1", "_src": "thunk.cc"}),
           ("fusion.2", 1200, 600, {"hlo_op": "fusion.2"}),  # crosses fusion.1's end
           ("copy", 1100, 50, {})]
    p = tmp_path / "other.xplane.pb"
    p.write_bytes(xspace_bytes(t0, {"Stream #7": evs}, pid=1, plane="/device:GPU:0"))
    space = xplane.read_xplane(p)
    assert space.start_ns == t0 and space.pid == 1 and space.host == "other"
    write_pftrace(tmp_path / "t.pftrace", [], xplanes=[space])
    d = read_pftrace(tmp_path / "t.pftrace")
    got = {s.name: s for s in d.slices}
    assert (got["fusion.1"].start_ns, got["fusion.1"].end_ns) == (t0 + 1000, t0 + 1500)
    assert got["fusion.1"].args == {"hlo_op": "fusion.1"}  # TraceMe bookkeeping dropped
    assert got["copy"].track == got["fusion.1"].track != got["fusion.2"].track
    assert not d.unclosed and not d.unmatched_ends
    assert {d.tracks[s.track].name for s in d.slices} == {"Stream #7", "Stream #7 (2)"}


def test_align_measures_a_clock_offset_and_pairs_a_partial_profile():
    t0 = 1_700_000_000_000_000_000
    spans = [("prefill.chunk", t0 + i * 1_000_000, t0 + i * 1_000_000 + 400_000) for i in range(10)]
    skew = 250_000  # the XPlane clock runs 250 µs ahead; the profile covered chunks 4..9 only
    evs = [("prefill.chunk", s - t0 + skew - 300, e - s + 600, {}) for _, s, e in spans[4:]]
    space = xplane.XSpace("x.xplane.pb", t0, 0, "h", 1,
                          {}, [xplane.Plane("/host:CPU", {}, [("python", evs)])])
    got = xplane.align(spans, space)
    assert got["pairs"] == 6
    assert got["offset_us"] == pytest.approx(250.0, abs=0.5)
    assert got["median_us"] == pytest.approx(0.3, abs=0.01) and got["max_us"] == pytest.approx(0.3, abs=0.01)
    assert xplane.align([("other", 0, 1)], space)["pairs"] == 0


def test_align_pairs_a_full_profile_whose_clock_is_ahead_by_several_spans():
    # Short, close spans (the test profiles' 128x128 matmuls): an XPlane clock 1 ms ahead puts the
    # first annotation past the 5th span; the only run there is, all of them, is still paired.
    t0 = 1_700_000_000_000_000_000
    spans = [("prefill.chunk", t0 + i * 200_000, t0 + i * 200_000 + 150_000) for i in range(6)]
    evs = [("prefill.chunk", s - t0 + 1_000_000, e - s, {}) for _, s, e in spans]
    space = xplane.XSpace("x.xplane.pb", t0, 0, "h", 1, {}, [xplane.Plane("/host:CPU", {}, [("python", evs)])])
    got = xplane.align(spans, space)
    assert got["pairs"] == 6 and got["offset_us"] == pytest.approx(1000.0) and got["max_us"] == 0


def test_merge_puts_files_of_several_processes_on_distinct_processes(profiled, tmp_path):
    rec, prof = profiled
    base = tmp_path / "spans.pftrace"
    write_pftrace(base, rec.spans)
    other = tmp_path / "otherhost.xplane.pb"
    start = clock.to_epoch_ns(rec.spans[0].start_ns)
    other.write_bytes(xspace_bytes(start, {"python": [("prefill.chunk", 10, 100, {})]}, pid=os.getpid()))
    alignment = merge(base, [*prof.paths, other], tmp_path / "m.pftrace")
    files = {os.path.basename(f["path"]): f for f in alignment["files"]}
    assert files["otherhost.xplane.pb"]["pairs"] == 0  # another host: its own clock, not shifted
    assert files[os.path.basename(prof.paths[0])]["pairs"] == CHUNKS + 1
    d = read_pftrace(tmp_path / "m.pftrace")
    procs = [t for t in d.tracks.values() if t.pid is not None and t.tid is None]
    assert len({t.pid for t in procs}) == len(procs) == 1 + 2  # host spans + one plane per file
    assert len(d.sequences) == 1 + 1 + 2  # spans, merge metadata, one per XPlane file
    assert socket.gethostname() in {t.name.split("(")[-1].split(" ")[0] for t in procs if "XPlane" in t.name}


def test_bad_xplane_files_raise_naming_the_file_and_write_nothing(profiled, tmp_path):
    rec, prof = profiled
    good = open(prof.paths[0], "rb").read()
    base = tmp_path / "spans.pftrace"
    write_pftrace(base, rec.spans)
    cases = {"trunc.xplane.pb": good[: len(good) // 2], "text.xplane.pb": b"hello, not a profile\n" * 9,
             "empty.xplane.pb": b"", "trace.xplane.pb": base.read_bytes()}
    for name, data in cases.items():
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=rf"{bad} is not an XPlane file"):
            xplane.read_xplane(bad)
        with pytest.raises(ValueError, match=rf"{name} is not an XPlane file"):
            merge(base, [prof.paths[0], bad], tmp_path / "out.pftrace")
        with pytest.raises(ValueError, match=rf"{name} is not an XPlane file"):
            write_pftrace(tmp_path / "out.pftrace", rec.spans, xplanes=[bad])
    missing = tmp_path / "missing.xplane.pb"
    with pytest.raises(FileNotFoundError, match="missing.xplane.pb"):
        merge(base, [missing], tmp_path / "out.pftrace")
    assert not (tmp_path / "out.pftrace").exists()
    assert sorted(os.listdir(tmp_path)) == sorted([*cases, "spans.pftrace"])
