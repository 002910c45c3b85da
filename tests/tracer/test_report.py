"""report.html: content and escaping checked on the string, drawing checked in headless Chromium.

Why a real browser: a report that is valid Python output can still be a blank page (a broken
SVG attribute, a CSP violation). The Chromium test loads the file, fails on any console error or
exception, counts the drawn marks of every chart in the live DOM against the generated ones, and
saves a screenshot under ``$SPECTRACE_ARTIFACTS`` (default ``<repo>/artifacts``) for CI.

Chromium is driven over ``--remote-debugging-pipe`` (the DevTools Protocol on fds 3/4, JSON
messages ending in NUL): stdlib only, one browser launch for console, DOM and screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import pathlib
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from spectrace.tracer.report import PASSES, render_report, write_report

REPO = pathlib.Path(__file__).resolve().parents[2]
CATEGORIES = ("prefill_queries", "past_key", "past_value", "logits", "other")


# ---------------------------------------------------------------- sample ttft.json
def make_ttft(*, seed: int = 0, n_runs: int = 1, prompt_tokens: int = 10741, prefill_seq_len: int = 128,
              keep: float = 0.10, config: dict | None = None) -> dict:
    """A realistic ttft.json (docs/CONTRACTS.md) for the seeds/000 story: host scoring copies FP32
    ``prefill_queries`` back after every draft chunk, so the speculative path is ~3x slower.

    Shapes: 8B base (~4.3 ms/128-token chunk), 1B draft (~1 ms/chunk), prefill_queries
    [L=16, N=32, T=128, H=64] fp32 = 16 MiB per chunk at ~1.6 GB/s (np.asarray of a GPU array),
    the retained bf16 past_key [16, 8, padded, 64] after the last draft chunk.
    """
    rng = random.Random(seed)
    num_chunks = -(prompt_tokens // -prefill_seq_len)
    n32 = -(prompt_tokens // -32)
    kept_chunks = math.ceil(n32 * keep)
    kept_tokens = (kept_chunks - 1) * 32 + (prompt_tokens - (n32 - 1) * 32)  # last chunk is partial
    num_chunks_pruned = -(kept_tokens // -prefill_seq_len)
    gbps = 1.6e9

    def xfer(nbytes: int) -> dict:
        return {"bytes": nbytes, "ms": nbytes / gbps * 1e3 * rng.uniform(0.95, 1.08)}

    def pass_chunks(n: int, tokens_total: int, compute_ms: float, spec: bool) -> list[dict]:
        out = []
        for i in range(n):
            tokens = min(prefill_seq_len, tokens_total - i * prefill_seq_len)
            io = {"logits": xfer(128256 * 4), "other": xfer(prefill_seq_len * 8 * 2)}
            if spec:
                io["prefill_queries"] = xfer(16 * 32 * prefill_seq_len * 64 * 4)
                if i == n - 1:
                    io["past_key"] = xfer(16 * 8 * n * prefill_seq_len * 64 * 2)
            warm = 3.0 if i == 0 else 1.0  # the first chunk pays for allocation
            ms = compute_ms * warm * rng.uniform(0.93, 1.1) + sum(v["ms"] for v in io.values())
            out.append({"index": i, "tokens": tokens, "ms": ms, "io": io})
        return out

    def window_io(chunks: list[dict]) -> dict:
        io = {}
        for c in CATEGORIES:
            cells = [ch["io"][c] for ch in chunks if c in ch["io"]]
            if cells:
                io[c] = {"bytes": sum(x["bytes"] for x in cells), "ms": sum(x["ms"] for x in cells),
                         "count": len(cells), "direction": "h2d" if c == "other" else "d2h"}
        return io

    runs = []
    for _ in range(n_runs):
        chunks = {"spec": pass_chunks(num_chunks, prompt_tokens, 1.0, True),
                  "baseline": pass_chunks(num_chunks, prompt_tokens, 4.3, False),
                  "base_pruned": pass_chunks(num_chunks_pruned, kept_tokens, 4.3, False)}
        win = {p: sum(ch["ms"] for ch in chunks[p]) / 1e3 for p in PASSES}
        r = {"ttft_spec_device_s": win["spec"] + 0.015 * rng.uniform(0.9, 1.1),
             "t_assemble_s": 0.030 * rng.uniform(0.9, 1.1), "t_score_s": 0.085 * rng.uniform(0.9, 1.1),
             "t_select_s": 0.002 * rng.uniform(0.9, 1.1),
             "ttft_base_pruned_only_s": win["base_pruned"] + 0.005,
             "ttft_baseline_s": win["baseline"] + 0.015 * rng.uniform(0.9, 1.1)}
        r["ttft_host_scoring_s"] = r["t_assemble_s"] + r["t_score_s"] + r["t_select_s"]
        r["ttft_spec_only_s"] = r["ttft_spec_device_s"] + r["ttft_host_scoring_s"]
        r["ttft_speculative_s"] = r["ttft_spec_only_s"] + r["ttft_base_pruned_only_s"]
        r.update(prompt_tokens=prompt_tokens, padded_len=prompt_tokens, num_chunks=num_chunks,
                 kept_tokens=kept_tokens, padded_len_pruned=kept_tokens, num_chunks_pruned=num_chunks_pruned)
        r["io"] = {p: window_io(chunks[p]) for p in PASSES}
        r["chunks"] = chunks
        r["slowest_chunks"] = sorted(({"pass": p, "index": ch["index"], "ms": ch["ms"]}
                                      for p in PASSES for ch in chunks[p]), key=lambda s: -s["ms"])[:5]
        runs.append(r)
    doc = {"schema": "spectrace.ttft/1", **runs[-1], "runs": runs,
           "config": config or {"base_model": "llama-3.1-8b-shape", "draft_model": "llama-3.2-1b-shape",
                                "prefill_seq_len": prefill_seq_len, "keep": keep, "look_ahead": 8,
                                "pool_kernel": 13, "scoring": "host"},
           "versions": {"spectrace": "0.1.0", "python": "3.11.7", "jax": "0.4.35", "jaxlib": "0.4.35"},
           "devices": {"backend": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "count": 1},
           "alignment": {"median_us": 9.0, "max_us": 31.0}}
    return doc


def _marks(page: str) -> dict[str, int]:
    """chart name -> number of data-mark elements, from the generated HTML."""
    return {m.group(1): m.group(2).count("data-mark=")
            for m in re.finditer(r'<svg class="chart" data-chart="([^"]+)"(.*?)</svg>', page, re.S)}


# ---------------------------------------------------------------- string-level tests
def test_report_has_every_chart_with_marks():
    doc = make_ttft()
    page = render_report(doc)
    marks = _marks(page)
    assert set(marks) == {"ttft-windows", "io-bytes", "io-ms", "chunks-spec", "chunks-baseline",
                          "chunks-base_pruned"}
    assert marks["ttft-windows"] == 6  # baseline + spec device, assemble, score, select, base_pruned
    for p in PASSES:
        assert marks[f"chunks-{p}"] >= len(doc["chunks"][p])
    # spec: prefill_queries, past_key, logits, other; baseline and base_pruned: logits, other
    assert marks["io-bytes"] == marks["io-ms"] == 8
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in page


def test_report_numbers_and_headline():
    doc = make_ttft()
    page = render_report(doc)
    ratio = doc["ttft_speculative_s"] / doc["ttft_baseline_s"]
    assert f"<b>{ratio:.2f}×</b>" in page and "(slower)" in page
    assert "Largest window: <b>draft device window</b>" in page
    assert "Most transfer time: <b>prefill_queries</b> d2h in pass <b>spec</b>" in page
    assert "NVIDIA H100 80GB HBM3" in page and "llama-3.2-1b-shape" in page
    ttft_section = page.split("<h2>TTFT windows</h2>")[1].split("<h2>")[0]
    assert "±" not in ttft_section  # one run: plain values, no "± 0"
    assert f"{doc['ttft_baseline_s'] * 1e3:.1f} ms" in ttft_section


def test_report_escapes_every_json_string():
    evil = '<script>alert("x")</script>'
    doc = make_ttft(config={evil: evil, "model": "a&b"})
    doc["versions"]["jax"] = evil
    doc["slowest_chunks"][0]["pass"] = evil
    doc["runs"][-1]["slowest_chunks"][0]["pass"] = evil
    page = render_report(doc)
    assert evil not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "a&amp;b" in page


def test_several_runs_show_mean_and_std(tmp_path):
    dirs = []
    for i in range(3):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "ttft.json").write_text(json.dumps(make_ttft(seed=i)))
        dirs.append(d)
    out = write_report(tmp_path)  # no ttft.json at the top: its subdirectories are the runs
    page = out.read_text()
    assert out == tmp_path / "report.html"
    assert "3 runs · values are mean ± std" in page
    assert "value (mean ± std, n=3)" in page
    assert '<path class="err"' in page  # error whiskers drawn
    # the runs list in one document counts the same way
    assert "4 runs" in render_report(make_ttft(n_runs=4))
    assert write_report(tmp_path / "x", run_dirs=dirs[:2]).read_text().count("2 runs") == 1
    # -o: the combined report goes where asked; each run's own report.html stays as it was
    (dirs[0] / "report.html").write_text("run0's own")
    r = subprocess.run([sys.executable, "-m", "spectrace.tracer.cli", "report", *map(str, dirs), "-o",
                        str(dirs[0] / "combined.html")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 runs" in (dirs[0] / "combined.html").read_text()
    assert (dirs[0] / "report.html").read_text() == "run0's own"


def test_report_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ttft.json in .*`spectrace run --out"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="schema 'other/1'"):
        render_report({"schema": "other/1"})
    with pytest.raises(ValueError, match="no ttft.json documents"):
        render_report([])


def test_report_tolerates_a_minimal_document():
    page = render_report({"ttft_baseline_s": 0.4, "ttft_spec_device_s": 0.9, "ttft_host_scoring_s": 0.1,
                          "ttft_base_pruned_only_s": 0.05})
    assert _marks(page)["ttft-windows"] == 4  # baseline, device, host scoring, base_pruned
    assert "no transfers recorded" in page and "Speculative TTFT is <b>2.62×</b>" in page


# ---------------------------------------------------------------- headless Chromium
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("chromium is not installed: run scripts/install-test-deps.sh (needs root/apt-get)")


class _DevTools:
    """A minimal DevTools Protocol client over Chromium's --remote-debugging-pipe."""

    def __init__(self, exe: str, profile: str, timeout_s: float = 20.0):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def child_fds():  # Chromium reads commands on fd 3 and writes replies on fd 4.
            hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 100)
            hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 100)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4), preexec_fn=child_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.deadline = time.monotonic() + timeout_s
        self.events: list[dict] = []
        self._buf = b""
        self._id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self._id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        return self._until(lambda m: m.get("method") == method)

    def _until(self, pred) -> dict:
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                m = json.loads(raw)
                if "method" in m:
                    self.events.append(m)
                if pred(m):
                    return m
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time; stderr:\n" + self._stderr())
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe; stderr:\n" + self._stderr())
            self._buf += chunk

    def _stderr(self) -> str:
        self.proc.kill()
        return self.proc.communicate()[1].decode(errors="replace")[-3000:]

    def close(self) -> None:
        try:
            os.write(self._w, json.dumps({"id": 10**6, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._w)
            os.close(self._r)
            if self.proc.stderr:
                self.proc.stderr.close()


_COUNT_MARKS = """JSON.stringify(Array.from(document.querySelectorAll('svg.chart')).map(s => {
  const m = Array.from(s.querySelectorAll('[data-mark]'));
  return [s.dataset.chart, m.length, m.filter(e => { const b = e.getBBox(); return b.width > 0 && b.height > 0; }).length,
          s.getBoundingClientRect().width];
}))"""


# subprocess.Popen forks and execs at once; JAX (initialized by earlier tests in this process)
# warns about any fork. Nothing of JAX runs in the child.
def _start_chromium(exe: str, profiles: str, attempts: int = 2):
    """A DevTools session and its first tab. Chromium's start-up on a loaded 2-core machine has
    once hung with its zygote reporting broken pipes (a fresh-clone CI run, the same tree passing
    twice before): a start that gets no answer is retried once with a fresh profile; rendering is
    what the test asserts, not how fast a browser starts."""
    for attempt in range(attempts):
        cdp = _DevTools(exe, os.path.join(profiles, str(attempt)))
        try:
            return cdp, cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        except (TimeoutError, RuntimeError):
            cdp.close()
            if attempt == attempts - 1:
                raise


@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_report_draws_in_headless_chromium(tmp_path):
    exe = _chromium()
    page = render_report(make_ttft(n_runs=3))
    html_path = tmp_path / "report.html"
    html_path.write_text(page, encoding="utf-8")
    artifacts = pathlib.Path(os.environ.get("SPECTRACE_ARTIFACTS", REPO / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="spectrace-chromium-") as profiles:
        cdp, target = _start_chromium(exe, profiles)
        try:
            sid = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.send(f"{domain}.enable", session=sid)
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1000, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=sid)
            cdp.send("Page.navigate", {"url": html_path.as_uri()}, session=sid)
            cdp.wait_event("Page.loadEventFired")
            drawn = json.loads(cdp.send("Runtime.evaluate", {"expression": _COUNT_MARKS, "returnByValue": True},
                                        session=sid)["result"]["value"])
            size = cdp.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
            shot = cdp.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
                session=sid)
            (artifacts / "report.png").write_bytes(base64.b64decode(shot["data"]))
            shutil.copyfile(html_path, artifacts / "report.html")
        finally:
            cdp.close()

    errors = [e["params"] for e in cdp.events
              if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == [], f"console errors in report.html: {errors}"
    expected = _marks(page)
    assert {name: (n, visible) for name, n, visible, _ in drawn} == {k: (v, v) for k, v in expected.items()}
    assert all(width > 300 for *_, width in drawn), drawn
    assert (artifacts / "report.png").stat().st_size > 20_000
