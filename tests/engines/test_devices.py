"""Tensor parallelism on CPU: one engine over 2 and 4 of 8 forced host devices equals one device.

This process's JAX already has its one CPU device, so the check runs in a subprocess started with
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
def results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(CHECK)], env=env, capture_output=True, text=True, timeout=600)
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


def test_heads_the_group_does_not_divide_are_refused(results):
    assert results["error"] is not None
    assert "n_kv_heads=2" in results["error"] and "4 devices" in results["error"]
