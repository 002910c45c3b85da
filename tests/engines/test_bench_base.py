"""engines.bench.base and engines.bench.spec run end to end on CPU with tiny presets (the GPU runs are by hand)."""

from __future__ import annotations

import json

import pytest

from spectrace.engines.bench import base as bench_base, spec as bench_spec


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


@pytest.mark.parametrize("n_tokens", [2, 37, 1500])
def test_exact_prompt_has_exactly_n_tokens(spectrace_cache, n_tokens):
    # engines.tokenizer.exact_prompt is what the benches (bench_spec) prefill.
    from spectrace.engines.defaults import default_pair
    from spectrace.engines.tokenizer import exact_prompt, load_tokenizer

    tok = load_tokenizer(default_pair(spectrace_cache)[1])
    prompt = exact_prompt(tok, n_tokens)
    assert len(tok(prompt)["input_ids"]) == n_tokens
    assert exact_prompt(tok, n_tokens) == prompt


def test_bench_spec_runs_on_cpu(spectrace_cache, monkeypatch, tmp_path, capsys):
    # torch is not a test dependency (the transformers reference runs on the GPU machine, whose
    # image has it): --no-hf. The table and the JSON still carry both scoring modes.
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))
    out = tmp_path / "bench.json"
    assert bench_spec.main(["--base", "default-base", "--draft", "default-draft", "--prompt-len", "100",
                            "--prefill-seq-len", "32", "-n", "2", "--warmup", "0", "--no-hf",
                            "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "spec_host" in text and "spec_device" in text
    doc = json.loads(out.read_text())
    assert doc["prompt_tokens"] == 100


@pytest.mark.parametrize("bench, argv, needle", [
    (bench_spec, ["-n", "0"], "-n must be a positive integer, got '0'"),
    (bench_spec, ["--warmup", "-1"], "--warmup must be a non-negative integer (0 for none), got '-1'"),
    (bench_spec, ["--keep", "2"], "--keep must be in (0, 1], got '2'"),
    (bench_spec, ["--prompt-len", "0"], "--prompt-len must be a positive integer, got '0'"),
    (bench_spec, ["--modes", "host,gpu"], "--modes must list host and/or device, comma-separated, got 'host,gpu'"),
    (bench_base, ["--runs", "0"], "--runs must be a positive integer, got '0'"),
    (bench_base, ["--gen", "x"], "--gen must be a positive integer, got 'x'"),
], ids=["spec-n", "spec-warmup", "spec-keep", "spec-prompt-len", "spec-modes", "base-runs", "base-gen"])
def test_a_benchmark_refuses_a_bad_number_naming_it_before_loading_anything(bench, argv, needle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv + ["--out", str(out)] if bench is bench_spec else argv)
    assert exit_.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()
