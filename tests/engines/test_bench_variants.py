"""scripts/bench_variants.py on the embedded pair (CPU): the side-by-side table and the host timeline.

The GPU runs of docs/performance.md read the speculative TTFT's unprofiled host timeline from
this script (session 16: tokenization, ``bind``, the draft chunk, the look-ahead, scoring, the
pruned base); here two workers of this checkout answer two requests each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_variants.py"


def test_two_variants_print_ratios_and_the_host_timeline(tmp_path, spectrace_cache, monkeypatch, fake_nvidia_smi):
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))  # the workers' embedded pair
    root = str(SCRIPT.parents[1])
    run = subprocess.run([sys.executable, str(SCRIPT), "--variant", f"a={root}", "--variant", f"b={root}",
                          "--n", "2", "--prompt-len", "600", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "speculative TTFT" in out and "b/a" in out and "kept equal across variants: True" in out
    table = out.split("host timeline of the speculative TTFT")[1].splitlines()
    rows = {line.split()[0]: line for line in table[2:] if line.strip()}
    for span in ("ttft.spec_device[spec]", "tokenize[spec]", "bind[spec]", "prefill.chunk[spec]",
                 "lookahead[spec]", "ttft.base_pruned[base]", "prefill.chunk[base]"):
        assert span in rows, (span, table)
    # the GPU's clocks per variant, from the conftest's nvidia-smi stand-in (1755 MHz, capped)
    gpu_table = out.split("the GPU during each variant's requests")[1].split("host timeline")[0].splitlines()
    assert [line.split()[:2] for line in gpu_table[2:4]] == [["a", "1755"], ["b", "1755"]], gpu_table
    saved = json.loads((tmp_path / "bench_variants.json").read_text())
    assert all(saved["gpu"][lb]["n"] > 0 and saved["gpu"][lb]["capped"] == 1.0 for lb in ("a", "b"))
    runs = saved["runs"]
    for answer in runs["a"] + runs["b"]:
        at = {k: v[0] for k, v in answer["timeline"].items()}
        # in the pipeline's order, each from the draft window's start (0)
        assert at["ttft.spec_device[spec]"] == 0.0
        assert at["tokenize[spec]"] <= at["bind[spec]"] <= at["prefill.chunk[spec]"] <= at["lookahead[spec]"]
        assert at["lookahead[spec]"] <= at["ttft.base_pruned[base]"] <= at["prefill.chunk[base]"]
        assert sum(v[1] for k, v in answer["timeline"].items() if k.startswith("ttft.")) <= answer["spec_ms"] * 1.001
