"""Tensor parallelism on CPU: one engine over 2 and 4 of 8 forced host devices equals one device.

Also the speculative engine with the draft on devices 0-1 and the base on 4-5 (disjoint groups)
against both on device 0. This process's JAX already has its one CPU device, so the check runs in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (``tests/engines/devices_check.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).with_name("devices_check.py")


@pytest.fixture(scope="module")
def results(spectrace_cache):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(CHECK), str(spectrace_cache)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", ["llama/2", "llama/4", "gemma/2", "gemma/4"])
def test_sharded_prefill_and_decode_equal_one_device(results, case):
    r = results[case]
    n = int(case.split("/")[1])
    assert r["rel"] < 1e-5, f"{case}: prefill logits differ from one device by {r['rel']:.2e} (relative)"
    assert r["rel_cont"] < 1e-5, f"{case}: continued prefill differs by {r['rel_cont']:.2e}"
    assert r["tokens"] == r["ref_tokens"], f"{case}: greedy decode differs from one device"
    # Really split: each device holds n_heads / n query heads and n_kv_heads / n KV heads.
    assert r["wq_shard"][1] == r["n_heads"] // n
    assert r["kv_shard"][2] == r["n_kv_heads"] // n
    assert r["qkv"] == "separate"


def test_weights_arrive_split_never_whole_on_a_device(results):
    p = results["placement"]
    assert p["init_same"]  # generated in place: the values of a one-device init
    L, D, N, H = p["wq_shape"]
    assert p["init_wq"] == [L, D, N // 4, H]
    assert p["init_w_down"][1] * 4 == p["ffn"]  # [L, F/4, D]
    assert p["init_embed"] == [2048, 256]  # replicated
    L, D, K, H = p["loaded_wk_shape"]
    assert p["loaded_wk"] == [L, D, K // 2, H]  # a checkpoint's weight, copied slice by slice


def test_heads_the_group_does_not_divide_are_refused(results):
    assert results["error"] is not None
    assert "n_kv_heads=2" in results["error"] and "4 devices" in results["error"]


@pytest.mark.parametrize("scoring", ["host", "device"])
def test_speculative_on_disjoint_groups_equals_one_device(results, scoring):
    r = results["spec"][scoring]
    assert r["same_kept"] and r["n_kept"] > 0, f"{scoring}: kept indices differ from one device"
    assert r["rel"] < 1e-5, f"{scoring}: pruned base logits differ by {r['rel']:.2e} (relative)"
    assert r["same_tokens"]


@pytest.mark.parametrize("scoring", ["host", "device"])
def test_spans_carry_the_device_group_and_the_crossings_are_transfers(results, scoring):
    spans = results["spec"][scoring]["spans"]
    groups = {s["attrs"]["engine"]: s["attrs"]["devices"] for s in spans
              if s["name"] in ("bind", "prefill.chunk", "lookahead", "decode")}
    assert groups == {"spec": "cpu:0,1", "base": "cpu:4,5"}
    # What crosses from the draft's group to the base's goes through the host, recorded: the kept
    # indices leave the draft (d2h in score.select, or the host-mode scores' inputs in the draft's
    # chunks) and the pruned ids and positions enter the base (h2d in its bind).
    names = [s["name"] for s in spans]
    pruned_bind = [s for s in spans[names.index("ttft.host_scoring"):] if s["name"] == "bind"][0]
    assert pruned_bind["attrs"]["devices"] == "cpu:4,5"
    assert any(t[1] == "h2d" and t[2] > 0 for t in pruned_bind["transfers"])
    leaving = [t for s in spans if s["attrs"].get("devices") == "cpu:0,1" or s["name"] == "score.select"
               for t in s["transfers"] if t[1] == "d2h"]
    assert leaving
    # Every copy names the group it left (d2h: src) or reached (h2d: dst); the host side is "".
    moves = [t for s in spans for t in s["transfers"]]
    assert {(t[1], t[3], t[4]) for t in moves} <= {("h2d", "", "cpu:0,1"), ("h2d", "", "cpu:4,5"),
                                                   ("d2h", "cpu:0,1", ""), ("d2h", "cpu:4,5", "")}
    assert all(t[4] == "cpu:4,5" for t in pruned_bind["transfers"])
    # The crossing itself: what scoring needed left the draft's group ...
    select = [s for s in spans if s["name"] == "score.select"][0]
    if scoring == "device":  # the kept indices and their count, one copy
        assert [(t[1], t[3]) for t in select["transfers"]] == [("d2h", "cpu:0,1")]
    else:  # the queries and the retained keys the host scores, in the draft's chunks
        assert {t[0] for t in leaving if t[3] == "cpu:0,1"} >= {"prefill_queries", "past_key"}
