"""Seed 003's protocol: known runs give known mean ± std (ddof=1) and effects vs the baseline."""

from __future__ import annotations

import json
import math

import pytest

from spectrace.tracer.benchstats import TTFT_PHASES, Stat, compare, render_markdown, summarize, to_json

# Three runs per variant chosen so the statistics are exact by hand:
# baseline total 3.6, 3.7, 3.8 -> mean 3.7, std 0.1; variant total 0.8, 0.9, 1.0 -> 0.9 ± 0.1.
RUNS = {
    "baseline": [{"prefill": 3.0, "generation": 0.6, "total": 3.6},
                 {"prefill": 3.1, "generation": 0.6, "total": 3.7},
                 {"prefill": 3.2, "generation": 0.6, "total": 3.8}],
    "prefill_scan": [{"prefill": 0.2, "generation": 0.6, "total": 0.8},
                     {"prefill": 0.3, "generation": 0.6, "total": 0.9},
                     {"prefill": 0.4, "generation": 0.6, "total": 1.0}],
    "qkv_fused": [{"prefill": 3.3, "generation": 0.66, "total": 3.96}],
}


def test_summarize_is_mean_and_sample_std():
    s = summarize([3.6, 3.7, 3.8])
    assert (s.n, round(s.mean, 12), round(s.std, 12)) == (3, 3.7, 0.1)
    assert summarize([2.5]) == Stat(2.5, 0.0, 1)  # one run: std 0, not NaN
    assert math.isclose(summarize([1, 2, 3, 4]).std, math.sqrt(5 / 3))  # ddof=1, not ddof=0
    with pytest.raises(ValueError, match="at least one value"):
        summarize([])


def test_compare_gives_effects_against_the_one_baseline():
    r = compare(RUNS)
    assert r.baseline == "baseline" and r.phases == ("prefill", "generation", "total")
    base, scan, qkv = r.variants
    assert base.name == "baseline" and base.effects is None
    assert math.isclose(scan.phases["total"].mean, 0.9) and math.isclose(scan.phases["total"].std, 0.1)
    e = scan.effects["total"]
    assert math.isclose(e.delta, -2.8) and math.isclose(e.pct, -2.8 / 3.7 * 100)
    assert math.isclose(scan.effects["generation"].delta, 0.0, abs_tol=1e-12)
    assert scan.effects["generation"].pct == pytest.approx(0.0, abs=1e-9)
    assert qkv.n == 1 and qkv.phases["total"].std == 0.0
    assert math.isclose(qkv.effects["total"].delta, 0.26) and math.isclose(qkv.effects["prefill"].pct, 0.2 / 3.1 * 100)


def test_markdown_table_has_the_expected_numbers():
    md = render_markdown(compare(RUNS))
    lines = md.splitlines()
    assert lines[0] == ("| variant | n | prefill (s) | generation (s) | total (s) | Δ prefill s (%) | "
                        "Δ generation s (%) | Δ total s (%) |")
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == ("| baseline (baseline) | 3 | 3.100 ± 0.100 | 0.600 ± 0.000 | 3.700 ± 0.100 | — | — | — |")
    assert lines[3] == ("| prefill_scan | 3 | 0.300 ± 0.100 | 0.600 ± 0.000 | 0.900 ± 0.100 | "
                        "-2.800 (-90.32%) | +0.000 (+0.00%) | -2.800 (-75.68%) |")
    assert lines[4] == ("| qkv_fused | 1 | 3.300 ± 0.000 | 0.660 ± 0.000 | 3.960 ± 0.000 | "
                        "+0.200 (+6.45%) | +0.060 (+10.00%) | +0.260 (+7.03%) |")
    only_total = compare(RUNS).to_markdown(effect_phases=["total"])
    assert only_total.splitlines()[0].endswith("| total (s) | Δ total s (%) |")


def test_seed_003_prefill_scan_effect_reproduces():
    # Seed 003 experiment 1: 3.696 -> 0.865 s total is -2.831 s (-76.60%).
    r = compare({"baseline": [{"total": 3.696}], "prefill_scan": [{"total": 0.865}]})
    assert r.variants[1].effects["total"].format() == "-2.831 (-76.60%)"


def test_json_round_trips():
    j = to_json(compare(RUNS, baseline="prefill_scan"))
    assert json.loads(json.dumps(j)) == j
    assert j["baseline"] == "prefill_scan" and j["variants"][0]["effects"] is None
    base = j["variants"][1]
    assert base["name"] == "baseline" and math.isclose(base["effects"]["total"]["delta_s"], 2.8)
    assert math.isclose(base["phases"]["total"]["std"], 0.1)


def test_ttft_documents_with_explicit_phases():
    def doc(spec, base):
        return {"ttft_spec_device_s": spec, "ttft_host_scoring_s": 0.1, "ttft_base_pruned_only_s": 0.05,
                "ttft_speculative_s": spec + 0.15, "ttft_baseline_s": base, "prompt_tokens": 10741,
                "io": {}, "chunks": {}}
    r = compare({"host": [doc(1.1, 0.4), doc(1.2, 0.4)], "device": [doc(0.2, 0.4), doc(0.3, 0.4)]},
                baseline="host", phases=TTFT_PHASES)
    assert r.phases == TTFT_PHASES
    assert math.isclose(r.variants[1].effects["ttft_speculative_s"].delta, -0.9)


def test_errors_name_what_was_wrong():
    with pytest.raises(ValueError, match=r"baseline 'base' is not one of the variants \['baseline'"):
        compare(RUNS, baseline="base")
    with pytest.raises(ValueError, match="variant 'x' has no runs"):
        compare({"baseline": RUNS["baseline"], "x": []})
    with pytest.raises(ValueError, match="got no variants"):
        compare({})
    bad = {"baseline": RUNS["baseline"], "x": [{"prefill": 1.0, "total": 1.5, "decode": 0.5}]}
    with pytest.raises(ValueError, match=r"variant 'x' run 0 has mismatched phases: missing \['generation'\], "
                                         r"unexpected \['decode'\]"):
        compare(bad)
    with pytest.raises(ValueError, match=r"missing \['ttft_baseline_s'\]"):
        compare({"baseline": [{"ttft_speculative_s": 1.0}]}, phases=["ttft_speculative_s", "ttft_baseline_s"])
    with pytest.raises(ValueError, match="phase 'total' must be a finite number of seconds, got 'slow'"):
        compare({"baseline": [{"total": "slow"}]})
    with pytest.raises(ValueError, match=r"effect_phases \['decode'\] are not measured"):
        render_markdown(compare(RUNS), effect_phases=["decode"])
