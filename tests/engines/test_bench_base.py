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
    assert "GB weights / 3.35 TB/s" in out  # CPU: the default bandwidth, named in the row


def test_decode_floor_uses_the_gpus_bandwidth():
    assert bench_base.hbm_bytes_per_s("NVIDIA H200") == 4.8e12
    assert bench_base.hbm_bytes_per_s("NVIDIA H100 80GB HBM3") == 3.35e12
    assert bench_base.hbm_bytes_per_s("cpu") == bench_base.DEFAULT_HBM_BYTES_PER_S
