"""scripts/bench_multi_gpu.py (issue 16's one-call multi-GPU measurement) on 8 forced CPU devices.

The script's CPU smoke configuration in a subprocess (this process's JAX has one device; see
test_devices.py): every section is written, the tensor-parallel runs show collective time in their
prefill chunks and the one-device run none, and the draft's kept indices do not depend on where
the engines sit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_multi_gpu.py"


@pytest.fixture(scope="module")
def doc(spectrace_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, str(SCRIPT), "--base", "default-base", "--draft", "default-draft", "--prompt-len", "600",
           "--prefill-seq-len", "128", "--tp", "1,2,4", "--n", "1", "--warmup", "1", "--big", "--big-base",
           "default-base", "--big-draft", "default-draft", "--cache-dir", str(spectrace_cache), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| base full prefill |" in proc.stdout and "| speculative |" in proc.stdout  # the table, last
    for var in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS"):
        assert f'"{var}"' in SCRIPT.read_text()
    return json.loads((out / "bench_multi_gpu.json").read_text())


def test_every_section(doc):
    assert {"tp", "spec", "xplane", "big"} <= set(doc)
    assert doc["n_devices"] == 8 and doc["prompt_tokens"] >= 600
    assert set(doc["tp"]) == {"1", "2", "4"}
    assert set(doc["spec"]["variants"]) == {"same", "disjoint", "disjoint_tp4"}
    assert "skipped" not in doc["big"] and doc["big"]["tp"] == 2
    assert doc["big"]["full_prefill"]["mean_ms"] > 0 and doc["big"]["speculative"]["mean_ms"] > 0
    for r in doc["tp"].values():
        assert r["ttft"]["mean_ms"] > 0 and r["efficiency"] > 0


def test_collective_time_only_in_tensor_parallel_chunks(doc):
    one = doc["tp"]["1"]["collectives"]
    assert one["chunks"] and one["mean_collective_ms_per_chunk"] == 0
    assert all(v == 0 for c in one["chunks"] for v in c["collective_ms"].values())
    for n in ("2", "4"):
        c = doc["tp"][n]["collectives"]
        assert c["aligned_files"] >= 1 and c["chunks"]
        assert c["mean_collective_ms_per_chunk"] > 0, f"TP {n}: no collective time in its prefill chunks"
        assert len(c["chunks"][0]["collective_ms"]) == int(n)  # one figure per device of the group


def test_kept_indices_do_not_depend_on_placement(doc):
    v = doc["spec"]["variants"]
    assert v["same"]["kept_tokens"] > 0
    assert v["same"]["kept_indices"] == v["disjoint"]["kept_indices"] == v["disjoint_tp4"]["kept_indices"]
    assert doc["spec"]["same_kept_indices"]


def test_xplane_trace_and_per_device_table(doc):
    x = doc["xplane"]
    assert Path(x["trace"]).is_file() and x["bytes"] > 0 and x["alignment"]["pairs"]
    rows = x["device_time"]["disjoint"]
    pruned = next(r for r in rows if r["name"] == "ttft.base_pruned")
    assert set(pruned["devices"]) >= {"CPU:0", "CPU:7"}  # the base on 0, the draft on 7: one row each
    assert pruned["devices"]["CPU:0"]["device_busy_ms"] > 0
