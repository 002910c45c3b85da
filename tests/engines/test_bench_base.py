"""engines.bench_base runs end to end on CPU with a tiny preset (the GPU run is by hand)."""

from __future__ import annotations

from engines import bench_base


def test_bench_base_prints_the_table(spectrace_cache, monkeypatch, capsys):
    monkeypatch.setenv("SPECTRACE_CACHE_DIR", str(spectrace_cache))
    assert bench_base.main(["--preset", "default-draft", "--prompt-len", "100", "--prefill-seq-len", "32",
                            "--gen", "4", "--runs", "2", "--no-hf"]) == 0
    out = capsys.readouterr().out
    assert "prompt 100 tokens, prefill_seq_len 32 (4 chunks)" in out
    assert "| prefill TTFT (ms) |" in out and "| decode (ms/token) |" in out and "decode floor" in out
