"""Benchmarks run by hand or on the GPU machine (not CI tests): ``python -m spectrace.engines.bench.base``
(the base engine against transformers) and ``python -m spectrace.engines.bench.spec`` (speculative
TTFT against transformers' full prefill); :mod:`.hf_baseline` is the transformers side of both."""
