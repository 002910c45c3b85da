"""engines.bench_base and engines.bench_spec run end to end on CPU with tiny presets (the GPU runs are by hand)."""

from __future__ import annotations

import json
import re

import pytest

from engines import bench_base, bench_spec


def test_bench_base_prints_the_table(spectrace_cache, monkeypatch, capsys):
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))
    assert bench_base.main(["--preset", "default-draft", "--prompt-len", "100", "--prefill-seq-len", "32",
                            "--gen", "4", "--runs", "2", "--no-hf"]) == 0
    out = capsys.readouterr().out
    assert "prompt 100 tokens, prefill_seq_len 32 (4 chunks)" in out
    assert "| prefill TTFT (ms) |" in out and "| decode (ms/token) |" in out and "decode floor" in out
    assert "GB weights / 3.35 TB/s" in out  # CPU: the default bandwidth, named in the row


def test_decode_floor_uses_the_gpus_bandwidth():
    assert bench_base.hbm_bytes_per_s("NVIDIA H200") == 4.8e12
    assert bench_base.hbm_bytes_per_s("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench_base.hbm_bytes_per_s("cpu") == bench_base.DEFAULT_HBM_BYTES_PER_S


def test_bench_base_with_the_transformers_baseline(spectrace_cache, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))
    assert bench_base.main(["--preset", "default-draft", "--prompt-len", "40", "--prefill-seq-len", "32",
                            "--gen", "3", "--runs", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "baseline: transformers " in out and ", sdpa, on cpu" in out
    rows = [line for line in out.splitlines() if line.startswith(("| prefill TTFT", "| decode (ms/token)"))]
    assert len(rows) == 2
    for row in rows:  # every cell measured: mean ± std on both sides and their ratio
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[1]) and re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", cells[2])
        assert re.fullmatch(r"\d+\.\d\dx", cells[3])


@pytest.mark.parametrize("n_tokens", [2, 37, 1500])
def test_exact_prompt_has_exactly_n_tokens(spectrace_cache, n_tokens):
    # engines.tokenizer.exact_prompt is what the benches (bench_spec) prefill.
    from engines.defaults import default_pair
    from engines.tokenizer import exact_prompt, load_tokenizer

    tok = load_tokenizer(default_pair(spectrace_cache)[1])
    prompt = exact_prompt(tok, n_tokens)
    assert len(tok(prompt)["input_ids"]) == n_tokens
    assert exact_prompt(tok, n_tokens) == prompt


def test_bench_spec_runs_on_cpu_with_the_transformers_reference(spectrace_cache, monkeypatch, tmp_path, capsys):
    # The speculative bench shares the transformers baseline (engines.hf_baseline) and the prompt.
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))
    out = tmp_path / "bench.json"
    assert bench_spec.main(["--base", "default-base", "--draft", "default-draft", "--prompt-len", "100",
                            "--prefill-seq-len", "32", "--modes", "host", "-n", "2", "--warmup", "0",
                            "--out", str(out)]) == 0
    assert "| hf_full_prefill (baseline) | 2 |" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["prompt_tokens"] == 100 and len(doc["hf"]["runs"]) == 2 and doc["hf"]["info"]["dtype"] == "float32"
