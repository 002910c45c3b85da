"""scripts/probe_decode_ops.py's kernel -> JAX op path map, read from a dumped HLO text (no GPU needed)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "probe_decode_ops.py"

HLO = """HloModule jit_decode_scan, entry_computation_layout={()}
%fused_computation.15 (p0: f32[1,2048]) -> f32[1] {
  %p0 = f32[1,2048]{1,0} parameter(0)
  ROOT %reduce.3 = f32[1]{0} reduce(%p0, %c), dimensions={1}, to_apply=%add, metadata={op_name="jit(decode_scan)/decode/while/body/closed_call/decode.step/inner"}
}
%body {
  %loop_reduce_fusion.15 = f32[1]{0} fusion(%x), kind=kLoop, calls=%fused_computation.15, metadata={op_name="jit(decode_scan)/decode/while/body/closed_call/decode.step/mlp/reduce_sum" stack_frame_id=7}
  %gemm_fusion_dot.97 = bf16[2,3072]{1,0} fusion(%a, %w), kind=kCustom, calls=%gemm, metadata={op_name="jit(decode_scan)/decode/while/body/closed_call/decode.step/dot_general"}
  %bitcast_dynamic-update-slice_fusion.2 = bf16[1]{0} fusion(%a), kind=kLoop, calls=%f2, metadata={op_name="jit(decode_scan)/decode/while/body/closed_call/decode.step/dynamic_update_slice"}
  ROOT %copy_fusion = f32[1]{0} fusion(%a), kind=kLoop, calls=%f3, metadata={op_name="jit(decode_scan)/decode/while/body/closed_call"}
}
"""


def _load():
    spec = importlib.util.spec_from_file_location("probe_decode_ops_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernels_are_named_by_the_jax_op_they_came_from(tmp_path):
    flags = os.environ.get("XLA_FLAGS")
    probe = _load()
    assert os.environ.get("XLA_FLAGS") == flags, "imported (as probe_lookahead does), it must not set a dump"
    (tmp_path / "module_0008.jit_decode_scan.sm_9.0_gpu_after_optimizations.txt").write_text(HLO)
    (tmp_path / "module_0006.jit_chunk_forward.sm_9.0_gpu_after_optimizations.txt").write_text(
        HLO.replace("decode.step/mlp", "other/program"))
    src = probe.hlo_sources(str(tmp_path))
    # profile kernel names: HLO names with "." and "-" as "_"; the jit and loop scaffolding dropped
    assert src["loop_reduce_fusion_15"] == "decode.step/mlp/reduce_sum"
    assert src["gemm_fusion_dot_97"] == "decode.step/dot_general"
    assert src["bitcast_dynamic_update_slice_fusion_2"] == "decode.step/dynamic_update_slice"
    assert src["copy_fusion"] == "jit(decode_scan)/decode/while/body/closed_call"  # nothing but scaffolding: kept whole
    assert "_kernel__2" not in src                                                  # a Pallas kernel has no HLO name
