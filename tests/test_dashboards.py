"""The Grafana dashboard, proven against a real Prometheus that scraped a real ``spectrace run``.

One module-scoped fixture starts Prometheus (Debian's ``prometheus``, from
scripts/install-test-deps.sh) as a plain process on a free loopback port, scraping every second
a second free port where ``spectrace run`` serves its metrics (``OTEL_METRICS_EXPORTER=prometheus``).
spectrace runs its requests and exits; Prometheus keeps the samples. Then every target of every
panel in dashboards/spectrace.json, with the template variables and Grafana's interval macros
filled in as Grafana would, goes through Prometheus's query API over the span of the run: each
must return finite series carrying the labels its legend names. The dashboard's numbers are
also held against what spectrace itself wrote to ttft.json.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT

DASHBOARDS = ROOT / "dashboards"
SCRAPE_S = 1
# 20-50 ms per request on this 2-core CPU with the compile cache warm (20 when the machine is
# idle): 400 requests keep spectrace serving for 8-20 s, enough scrapes for a 4 s rate window to
# hold several samples at any point (150 gave only 3 scrapes on an idle machine).
RUNS = 400
MIN_SCRAPES_WITH_REQUESTS = 5

# What the contract (docs/CONTRACTS.md, DESIGN.md "Metrics") lets each label be.
LABEL_DOMAINS = {
    "spectrace_pass": {"speculative", "baseline"},
    "spectrace_window": {"ttft.spec_device", "ttft.host_scoring", "ttft.base_pruned", "ttft.baseline", "decode"},
    "spectrace_engine": {"spec", "base"},
    "spectrace_io_category": {"prefill_queries", "past_key", "past_value", "logits", "other"},
    "spectrace_io_direction": {"h2d", "d2h"},
    "gen_ai_token_type": {"input", "output"},
    "spectrace_reason": {"buffer_full", "export_failed", "at_exit", "no_exporter"},
}
# Label values a panel must show after a default run (every one of them, across its targets).
PANEL_MUST_SHOW = {
    "TTFT p50 / p90 / p99: speculative vs baseline": {"spectrace_pass": {"speculative", "baseline"}},
    "TTFT windows (mean per request)": {"spectrace_window": {"ttft.spec_device", "ttft.host_scoring",
                                                             "ttft.base_pruned", "ttft.baseline"}},
    "Host↔device bytes by category and direction": {"spectrace_engine": {"spec", "base"},
                                                   "spectrace_io_direction": {"h2d", "d2h"}},
    "Host↔device copy time by category and direction": {"spectrace_engine": {"spec", "base"},
                                                       "spectrace_io_direction": {"h2d", "d2h"}},
    "Tokens per second": {"gen_ai_token_type": {"input", "output"}},
    "Requests per second by pass": {"spectrace_pass": {"speculative", "baseline"}},
}

# subprocess.Popen forks and execs at once; JAX (initialized by earlier tests in this process)
# warns about any fork. Nothing of JAX runs in the children.
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")


# ---------------------------------------------------------------- the dashboard and its generator
def _generator():
    spec = importlib.util.spec_from_file_location("spectrace_dashboards_generate", DASHBOARDS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dashboard() -> dict:
    return json.loads((DASHBOARDS / "spectrace.json").read_text(encoding="utf-8"))


def _targets(dash: dict):
    for panel in dash["panels"]:
        for t in panel["targets"]:
            yield panel, t


def _variables(dash: dict) -> dict:
    return {v["name"]: v for v in dash["templating"]["list"]}


# ---------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process:
    """A child process whose stdout and stderr go to a file, read back for failure messages."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.argv, self.log = argv, log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                         env=env, cwd=cwd)
        self.pid = self.proc.pid

    def output(self, limit: int = 4000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        return f"{' '.join(self.argv[:3])} ... (pid {self.pid}, exit {self.proc.poll()}); its output:\n{self.output()}"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, 15)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, 9)
                self.proc.wait()


class Prometheus:
    def __init__(self, proc: _Process, port: int, target_port: int):
        self.proc, self.url, self.target_port = proc, f"http://127.0.0.1:{port}", target_port

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; the JSON ``data``, or an AssertionError with Prometheus's own words."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
            raise AssertionError(f"Prometheus refused {path} {params}: {body.get('errorType')}: "
                                 f"{body.get('error')}") from None
        assert body["status"] == "success", body
        return body["data"]


def _wait_ready(proc: _Process, url: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"Prometheus exited before it was ready: {proc.describe()}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"Prometheus not ready at {url} after {deadline_s:.0f} s: {proc.describe()}")
        time.sleep(0.1)


def _scrape_config(target_port: int) -> str:
    """The committed dashboards/prometheus.yml, pointed at the test's port and scraping every second."""
    text = (DASHBOARDS / "prometheus.yml").read_text(encoding="utf-8")
    for old, new in (("127.0.0.1:9464", f"127.0.0.1:{target_port}"),
                     ("scrape_interval: 5s", f"scrape_interval: {SCRAPE_S}s"),
                     ("scrape_timeout: 4s", "scrape_timeout: 900ms"),
                     ("evaluation_interval: 5s", "evaluation_interval: 1s")):
        assert old in text, f"dashboards/prometheus.yml no longer has {old!r}; update _scrape_config"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed: run scripts/install-test-deps.sh (needs root/apt-get)")
    d = tmp_path_factory.mktemp("prometheus")
    port, target_port = _free_port(), _free_port()
    (d / "prometheus.yml").write_text(_scrape_config(target_port), encoding="utf-8")
    proc = _Process([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
                     "--log.level=info"], d / "prometheus.log", cwd=d)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", deadline_s=30)
        yield Prometheus(proc, port, target_port)
    finally:
        proc.stop()


@dataclass
class Run:
    start: float  # epoch seconds: spectrace started; its metrics can appear from here
    end: float  # epoch seconds: spectrace has exited; Prometheus holds all it will get
    returncode: int
    proc: _Process
    out: Path


@pytest.fixture(scope="module")
def scraped_run(prometheus, tmp_path_factory):
    """A real ``spectrace run`` serving its metrics to ``prometheus`` until it exits."""
    d = tmp_path_factory.mktemp("spectrace")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
               OTEL_EXPORTER_PROMETHEUS_PORT=str(prometheus.target_port), OTEL_TRACES_EXPORTER="none",
               QEFF_SPEC_IO_TIMING="1")
    argv = [sys.executable, "-m", "spectrace.tracer.cli", "run", "--runs", str(RUNS), "--prompt-len", "300",
            "--quiet", "--out", str(d / "out")]
    start = time.time()
    proc = _Process(argv, d / "spectrace.log", env=env, cwd=d)
    try:
        returncode = proc.proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.stop()
        pytest.fail(f"spectrace run did not finish in 300 s: {proc.describe()}")
    end = time.time()
    run = Run(start, end, returncode, proc, d / "out")

    scrapes = prometheus.api("query", query=f'count_over_time(gen_ai_server_time_to_first_token_seconds_count'
                                            f'{{job="spectrace"}}[{math.ceil(end - start) + 1}s])', time=end)["result"]
    seen = max((int(float(s["value"][1])) for s in scrapes), default=0)
    if seen < MIN_SCRAPES_WITH_REQUESTS:
        up = prometheus.api("query_range", query="up", start=start, end=end, step=SCRAPE_S)["result"]
        pytest.fail(f"Prometheus scraped spectrace's requests only {seen} times (need {MIN_SCRAPES_WITH_REQUESTS}; "
                    f"raise RUNS). up over the run: {up}\nspectrace: {proc.describe()}\n"
                    f"Prometheus: {prometheus.proc.describe()}")
    return run


# ---------------------------------------------------------------- Grafana's substitutions
_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def _regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: a multi-value variable's values in a =~ matcher."""
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


def _all_value(values: list[str]) -> str:
    """What Grafana puts for "All" of a multi-value variable without a custom all value."""
    escaped = [_regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _fill(expr: str, values: dict[str, str]) -> str:
    def one(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise AssertionError(f"query uses ${name}, which neither the dashboard nor this test defines: {expr}")
        return values[name]

    return _VAR.sub(one, expr)


def _grafana_values(dash: dict, prometheus: Prometheus, run: Run) -> dict[str, str]:
    """Template variables at their defaults (model = All) and the interval macros for this run."""
    model = _variables(dash)["model"]
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", model["query"])
    assert m, f"model variable query is not label_values(selector, label): {model['query']!r}"
    models = prometheus.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)}, start=run.start, end=run.end)
    assert models, f"the model variable's query {model['query']} found no values"
    # Grafana: $__interval is the query step (at least the data source's scrape interval, set to
    # the scrape interval here); $__rate_interval = max($__interval + scrape interval, 4 x scrape interval).
    interval = SCRAPE_S
    return {"model": _all_value(models), "__interval": f"{interval}s",
            "__rate_interval": f"{max(interval + SCRAPE_S, 4 * SCRAPE_S)}s",
            "__range": f"{math.ceil(run.end - run.start)}s"}


def _legend_labels(target: dict) -> list[str]:
    return re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))


def _floats(series: dict) -> list[float]:
    points = series["values"] if "values" in series else [series["value"]]
    return [float(v) for _, v in points]


@pytest.fixture(scope="module")
def panel_results(prometheus, scraped_run):
    """``{(panel title, refId): (target, panel, filled expr, result)}`` for every target of the dashboard."""
    dash = _dashboard()
    values = _grafana_values(dash, prometheus, scraped_run)
    out = {}
    for panel, t in _targets(dash):
        expr = _fill(t["expr"], values)
        if t.get("instant"):
            data = prometheus.api("query", query=expr, time=scraped_run.end)
            assert data["resultType"] == "vector", (panel["title"], data["resultType"])
        else:
            data = prometheus.api("query_range", query=expr, start=scraped_run.start, end=scraped_run.end,
                                  step=SCRAPE_S)
            assert data["resultType"] == "matrix", (panel["title"], data["resultType"])
        out[(panel["title"], t["refId"])] = (t, panel, expr, data["result"])
    return out


# ---------------------------------------------------------------- tests: the JSON
def test_committed_dashboard_is_the_generators_output():
    gen = _generator()
    assert (DASHBOARDS / "spectrace.json").read_text(encoding="utf-8") == gen.render(), \
        "dashboards/spectrace.json is stale: run python dashboards/generate.py"


def test_dashboard_structure():
    dash = _dashboard()
    assert dash["schemaVersion"] >= 39 and dash["uid"] and dash["title"] and dash["id"] is None
    variables = _variables(dash)
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and "gen_ai_request_model" in model["query"]
    assert model["query"].startswith("label_values(") and model["includeAll"] and model["multi"]
    assert model["datasource"]["uid"] == "${DS_PROMETHEUS}"

    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    cells = {}
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no target"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), (p["title"], refs)
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), (p["title"], t["refId"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, (p["title"], g)
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells.get((x, y))!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]
    types = {p["type"] for p in dash["panels"]}
    assert {"timeseries", "heatmap", "stat"} <= types
    heat = [p for p in dash["panels"] if p["type"] == "heatmap"]
    assert all(t["format"] == "heatmap" and "_bucket" in t["expr"] for p in heat for t in p["targets"])


def test_committed_scrape_config_is_valid():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian's prometheus ships it): run scripts/install-test-deps.sh")
    r = subprocess.run([promtool, "check", "config", str(DASHBOARDS / "prometheus.yml")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- tests: against Prometheus
# Known at the time of writing: run_command's closing tracer.configure(**previous) passes
# metrics="env" back, configure() takes that as a change and builds a second Prometheus reader
# whose server binds the port the first one still holds. Any other failure fails this test.
_KNOWN_REBIND = "cannot listen (Address already in use)"


def test_spectrace_run_exits_cleanly(scraped_run):
    assert (scraped_run.out / "ttft.json").is_file(), scraped_run.proc.describe()
    # Restoring the tracer's settings at the end of a run once rebound the Prometheus port
    # (exit 1, "Address already in use"); configure() now keeps a setting it already runs.
    output = scraped_run.proc.output(limit=10**6)
    assert _KNOWN_REBIND not in output
    assert "shutdown can only be called once" not in output  # spectrace shuts its provider down once
    assert scraped_run.returncode == 0, f"spectrace run with the Prometheus exporter failed: " \
                                        f"{scraped_run.proc.describe()}"


def test_every_panel_query_returns_finite_labelled_series(panel_results, prometheus):
    dash = _dashboard()
    assert len(panel_results) == sum(len(p["targets"]) for p in dash["panels"])
    problems = []
    for (title, ref), (t, panel, expr, result) in panel_results.items():
        where = f"panel {title!r} target {ref}: {expr}"
        if not result:
            problems.append(f"{where}\n    returned no series")
            continue
        for s in result:
            vals = _floats(s)
            if any(math.isinf(v) for v in vals):
                problems.append(f"{where}\n    infinite value in {s['metric']}: {vals}")
            finite = sum(math.isfinite(v) for v in vals)
            if finite < (1 if t.get("instant") else 2):  # a line needs two points
                problems.append(f"{where}\n    {finite} finite values in {s['metric']}: {vals}")
            for label in _legend_labels(t):
                if not s["metric"].get(label):
                    problems.append(f"{where}\n    series {s['metric']} lacks label {label!r} its legend uses")
                elif label in LABEL_DOMAINS and s["metric"][label] not in LABEL_DOMAINS[label]:
                    problems.append(f"{where}\n    {label}={s['metric'][label]!r} is not one of "
                                    f"{sorted(LABEL_DOMAINS[label])}")
    assert not problems, "\n".join(problems) + f"\nPrometheus: {prometheus.proc.describe()}"


def test_panels_show_every_pass_window_engine_and_direction(panel_results):
    seen: dict[str, dict[str, set]] = {}
    for (title, _ref), (_t, _p, _e, result) in panel_results.items():
        for s in result:
            for k, v in s["metric"].items():
                seen.setdefault(title, {}).setdefault(k, set()).add(v)
    assert set(PANEL_MUST_SHOW) <= {title for title, _ in panel_results}, "a panel this test knows was renamed"
    for title, must in PANEL_MUST_SHOW.items():
        for label, wanted in must.items():
            got = seen.get(title, {}).get(label, set())
            assert wanted <= got, f"panel {title!r}: {label} shows {sorted(got)}, missing {sorted(wanted - got)}"


def test_heatmap_series_are_buckets(panel_results, prometheus, scraped_run):
    heat = [(expr, result) for (_t, panel, expr, result) in panel_results.values() if panel["type"] == "heatmap"]
    assert heat
    for expr, result in heat:
        les = {s["metric"]["le"] for s in result}
        assert "+Inf" in les and len(les) >= 3, les
        assert all(le == "+Inf" or float(le) > 0 for le in les), les
        # The counters under the rate() are cumulative buckets: never fewer with a larger le. (Not
        # checked on the rates: rate() extrapolates each series to the window's edge by its own
        # first value, so rates of buckets that appear mid-window can fall with le; Prometheus's
        # histogram_quantile repairs exactly that.) Their last scrape's values: at the run's end the
        # series are already stale (spectrace has exited), so an instant selector finds nothing.
        window = math.ceil(scraped_run.end - scraped_run.start) + 1
        raw = re.sub(r"rate\((.*)\[[^\]]*\]\)", rf"last_over_time(\1[{window}s])", expr)
        assert raw != expr, expr
        counts = prometheus.api("query", query=raw, time=scraped_run.end)["result"]
        assert {s["metric"]["le"] for s in counts} == les
        by_le = sorted(counts, key=lambda s: float(s["metric"]["le"]))
        for lo, hi in zip(by_le, by_le[1:]):
            assert float(lo["value"][1]) <= float(hi["value"][1]), (lo["metric"]["le"], hi["metric"]["le"])
        assert float(by_le[-1]["value"][1]) > 0


def test_dashboard_numbers_agree_with_spectraces_own_ttft(panel_results, scraped_run):
    """The speedup stat over the run equals the ratio of mean TTFTs spectrace wrote to ttft.json."""
    doc = json.loads((scraped_run.out / "ttft.json").read_text(encoding="utf-8"))
    runs = doc["runs"]
    mean_spec = sum(r["ttft_speculative_s"] for r in runs) / len(runs)
    mean_base = sum(r["ttft_baseline_s"] for r in runs) / len(runs)
    [(_t, _p, expr, result)] = [v for (title, _), v in panel_results.items() if title.startswith("TTFT speedup")]
    [series] = result
    speedup = float(series["value"][1])
    # Prometheus's rate window holds the requests between its first and last scrape of the run
    # (not the warm-up, nor the last few); the means match to within the run-to-run spread.
    assert speedup == pytest.approx(mean_base / mean_spec, rel=0.10), (expr, speedup, mean_base, mean_spec)
    [(_t, _p, _e, kept)] = [v for (title, _), v in panel_results.items() if title.startswith("Kept-token ratio")]
    ratios = [r["kept_tokens"] / r["prompt_tokens"] for r in runs]
    assert float(kept[0]["value"][1]) == pytest.approx(sum(ratios) / len(ratios), rel=0.05)
