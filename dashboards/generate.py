"""Write ``dashboards/spectrace.json``, the Grafana dashboard over spectrace's Prometheus metrics.

    python dashboards/generate.py           # rewrite spectrace.json
    python dashboards/generate.py --check   # exit 1 if spectrace.json is not what this writes

Plain dictionaries, no dashboard library: the dashboard is a dozen panels, and the libraries on
PyPI either stopped at old Grafana schemas (grafanalib, last release January 2024) or would be a
new dependency whose PyPI versions are epoch-stamped per Grafana release, so a plain
``pip install`` picks the Grafana 10.1 flavour (grafana-foundation-sdk). What keeps this file
honest is ``tests/test_dashboards.py``: it runs every query below against a real Prometheus that
scraped a real ``spectrace run``, and checks that the committed JSON is this script's output.

Metric names are the Prometheus exporter's renderings of spectrace's OpenTelemetry instruments
(dots become underscores; the unit becomes a suffix; counters get ``_total``; histograms
``_bucket``/``_sum``/``_count``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "spectrace.json"

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
MODEL = 'gen_ai_request_model=~"$model"'

TTFT = "gen_ai_server_time_to_first_token_seconds"
TPOT = "gen_ai_server_time_per_output_token_seconds"
TOKENS = "gen_ai_client_token_usage"
WINDOW = "spectrace_window_duration_seconds"
CHUNK = "spectrace_prefill_chunk_duration_seconds"
KEPT = "spectrace_kept_token_ratio"
IO_BYTES = "spectrace_io_size_bytes_total"
IO_TIME = "spectrace_io_duration_seconds_total"
DROPPED = "spectrace_spans_dropped_total"
RECORDED = "spectrace_spans_recorded_total"

# The speculative pass's TTFT is the sum of these three windows; ttft.baseline is the other pass.
SPEC_WINDOWS = r"ttft\\.spec_device|ttft\\.host_scoring|ttft\\.base_pruned"
IO_BY = "spectrace_engine, spectrace_io_category, spectrace_io_direction"
IO_LEGEND = "{{spectrace_engine}} {{spectrace_io_category}} {{spectrace_io_direction}}"


def rate(metric: str, selector: str = MODEL, window: str = "$__rate_interval") -> str:
    braces = f"{{{selector}}}" if selector else ""
    return f"rate({metric}{braces}[{window}])"


def mean(histogram: str, by: str, selector: str = MODEL, window: str = "$__rate_interval") -> str:
    """Mean observation over the window: rate of the sum over rate of the count."""
    grp = f"sum by ({by}) " if by else "sum"
    return (f"{grp}({rate(histogram + '_sum', selector, window)})"
            f" / {grp}({rate(histogram + '_count', selector, window)})")


def quantile(q: float, histogram: str, by: str = "") -> str:
    keep = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) ({rate(histogram + '_bucket')}))"


def target(ref: str, expr: str, legend: str = "__auto", *, instant: bool = False, fmt: str = "time_series") -> dict:
    return {"datasource": DS, "editorMode": "code", "expr": expr, "format": fmt, "instant": instant,
            "legendFormat": legend, "range": not instant, "refId": ref}


def timeseries(title: str, description: str, unit: str, targets: list, *, stack: bool = False,
               bars: bool = False, overrides: list | None = None, calcs=("mean", "max")) -> dict:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit, "min": 0,
                "custom": {"drawStyle": "bars" if bars else "line", "lineWidth": 1,
                           "fillOpacity": 80 if bars else 10, "showPoints": "never", "spanNulls": False,
                           "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                           "axisPlacement": "auto", "axisSoftMin": 0},
            },
            "overrides": overrides or [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": list(calcs)},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": targets,
    }


def stat(title: str, description: str, unit: str, targets: list, *, decimals: int = 2) -> dict:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "decimals": decimals,
                                     "color": {"mode": "thresholds"},
                                     "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                    "textMode": "auto", "wideLayout": True, "showPercentChange": False},
        "targets": targets,
    }


def heatmap(title: str, description: str, expr: str) -> dict:
    return {
        "type": "heatmap", "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False},
                                                "scaleDistribution": {"type": "linear"}}},
                        "overrides": []},
        "options": {
            "calculate": False,  # the buckets come from Prometheus, already bucketed
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential", "exponent": 0.5,
                      "steps": 64, "reverse": False, "fill": "dark-orange"},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
        },
        # format=heatmap: Grafana turns the cumulative le buckets into per-bucket counts.
        "targets": [target("A", expr, "{{le}}", fmt="heatmap")],
    }


def panels() -> list[dict]:
    ttft_q = [target(ref, quantile(q, TTFT, "spectrace_pass"), f"p{int(q * 100)} {{{{spectrace_pass}}}}")
              for ref, q in (("A", 0.5), ("B", 0.9), ("C", 0.99))]

    def pass_mean(p: str) -> str:
        return mean(TTFT, "", f'{MODEL}, spectrace_pass="{p}"', "$__range")

    speedup = f"({pass_mean('baseline')}) / ({pass_mean('speculative')})"
    baseline_line = [{"matcher": {"id": "byName", "options": "ttft.baseline"},
                      "properties": [{"id": "custom.stacking", "value": {"mode": "none", "group": "B"}},
                                     {"id": "custom.drawStyle", "value": "line"},
                                     {"id": "custom.lineWidth", "value": 2},
                                     {"id": "custom.fillOpacity", "value": 0},
                                     {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}]
    spec_sel = f'{MODEL}, spectrace_window=~"{SPEC_WINDOWS}"'
    base_sel = f'{MODEL}, spectrace_window="ttft.baseline"'
    layout = [  # ((x, y, w, h) on Grafana's 24-column grid, panel)
        ((0, 0, 16, 10), timeseries(
            "TTFT p50 / p90 / p99: speculative vs baseline",
            "Time to first token per pass (gen_ai.server.time_to_first_token), quantiles over the rate window.",
            "s", ttft_q)),
        ((16, 0, 8, 5), stat(
            "TTFT speedup (baseline / speculative, mean over range)",
            "Mean baseline TTFT divided by mean speculative TTFT over the dashboard's time range.",
            "suffix:×", [target("A", speedup, "speedup", instant=True)])),
        ((16, 5, 8, 5), stat(
            "Kept-token ratio (mean over range)",
            "Tokens the speculative pass kept for the base model, over prompt tokens (spectrace.kept_token.ratio).",
            "percentunit", [target("A", mean(KEPT, "", MODEL, "$__range"), "kept", instant=True)], decimals=1)),
        ((0, 10, 12, 9), timeseries(
            "TTFT windows (mean per request)",
            "Mean duration of each window of the speculative pass, stacked (they add up to its TTFT); "
            "the dashed line is the baseline pass's single window.",
            "s", [target("A", mean(WINDOW, "spectrace_window", spec_sel), "{{spectrace_window}}"),
                  target("B", mean(WINDOW, "spectrace_window", base_sel), "{{spectrace_window}}")],
            stack=True, bars=True, overrides=baseline_line)),
        ((12, 10, 12, 9), timeseries(
            "Time per output token",
            "Decode time per output token after the first (gen_ai.server.time_per_output_token): "
            "exact mean, and quantiles from the histogram's buckets.",
            "s", [target("A", mean(TPOT, ""), "mean"),
                  target("B", quantile(0.5, TPOT), "p50"),
                  target("C", quantile(0.9, TPOT), "p90")])),
        ((0, 19, 12, 9), timeseries(
            "Host↔device bytes by category and direction",
            "Bytes per second copied between host and device (spectrace.io.size), per engine, "
            "binding category and direction.",
            "Bps", [target("A", f"sum by ({IO_BY}) ({rate(IO_BYTES)})", IO_LEGEND)], stack=True)),
        ((12, 19, 12, 9), timeseries(
            "Host↔device copy time by category and direction",
            "Milliseconds spent in copies per second of wall time (spectrace.io.duration), per engine, "
            "binding category and direction.",
            "ms", [target("A", f"1000 * sum by ({IO_BY}) ({rate(IO_TIME)})", IO_LEGEND)], stack=True)),
        ((0, 28, 12, 9), heatmap(
            "Prefill chunk latency",
            "Distribution of prefill chunk durations, both engines (spectrace.prefill.chunk.duration).",
            f"sum by (le) ({rate(CHUNK + '_bucket')})")),
        ((12, 28, 12, 9), timeseries(
            "Tokens per second",
            "Output (generated) and input (prompt) tokens per second (gen_ai.client.token.usage).",
            "short", [target("A", f"sum by (gen_ai_token_type) ({rate(TOKENS + '_sum')})",
                             "{{gen_ai_token_type}} tokens/s")])),
        ((0, 37, 12, 8), timeseries(
            "Spans dropped and recorded",
            "Recorded spans per second, and those not exported, by reason (spectrace.spans.dropped). "
            "no_exporter is expected when no span exporter is configured.",
            "short", [target("A", f"sum by (spectrace_reason) ({rate(DROPPED, '')})", "dropped {{spectrace_reason}}"),
                      target("B", f"sum({rate(RECORDED, '')})", "recorded")])),
        ((12, 37, 12, 8), timeseries(
            "Requests per second by pass",
            "Requests that reached their first token, per second, per pass (the count of "
            "gen_ai.server.time_to_first_token).",
            "reqps", [target("A", f"sum by (spectrace_pass) ({rate(TTFT + '_count')})", "{{spectrace_pass}}")])),
    ]
    return [{"id": i, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel}
            for i, ((x, y, w, h), panel) in enumerate(layout, start=1)]


MODEL_QUERY = (f'label_values({{__name__=~"{TTFT}_count|{CHUNK}_count"}}, gen_ai_request_model)')


def dashboard() -> dict:
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "spectrace: where an LLM's time to first token goes (speculative vs baseline prefill, "
                       "TTFT windows, host-device copies, prefill chunks). Generated by dashboards/generate.py.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels(),
        "refresh": "10s",
        "schemaVersion": 39,
        "tags": ["spectrace", "llm", "ttft", "opentelemetry"],
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
             "regex": ""},
            {"name": "model", "label": "Model", "type": "query", "datasource": DS,
             "definition": MODEL_QUERY, "query": MODEL_QUERY,
             # the draft model's windows (spectrace_engine="spec") carry the draft's name: "All"
             # keeps both engines' copies and chunks on the panels.
             "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
             "hide": 0, "includeAll": True, "multi": True, "options": [], "refresh": 2, "regex": "", "sort": 1},
        ]},
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "spectrace: time to first token",
        "uid": "spectrace-ttft",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def write(path: Path = OUT) -> None:
    """Write to a temporary name beside ``path`` and rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if OUT.exists() and OUT.read_text(encoding="utf-8") == render():
            return 0
        print(f"{OUT} is not what dashboards/generate.py writes: run python dashboards/generate.py",
              file=sys.stderr)
        return 1
    if argv:
        print("usage: python dashboards/generate.py [--check]", file=sys.stderr)
        return 2
    write()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
