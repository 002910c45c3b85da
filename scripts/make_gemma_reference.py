"""Make tests/engines/data/gemma_reference.npz: transformers' logits for the small Gemma 2 / Gemma 3 test models.

Run on the GPU machine (``bash scripts/gpu_gemma.sh refs``), float32 with TF32 off, eager
attention; CI only reads the .npz. For every model in
``engines.testing_models.GEMMA_REFERENCE_MODELS`` this writes the seeded checkpoint, loads it
with ``transformers.AutoModelForCausalLM`` (``Gemma2ForCausalLM`` / ``Gemma3ForCausalLM``),
checks that transformers reads the config as the engine does, and stores:

* ``<name>/logits``      [SEQ_LEN, V]: the full sequence, positions 0..SEQ_LEN-1;
* ``<name>/rule_logits`` [P, V]: the pruned-prompt rule, computed by transformers itself: the
  full prompt with the dropped tokens masked out as keys (a 4-D additive mask per layer type,
  sliding layers ``key > query - window`` by original position), rows of the kept tokens;
* ``<name>/greedy``      [8]: ``generate``'s greedy continuation of the full sequence;
* ``<name>/greedy_forced`` [8]: the argmax of transformers' own teacher-forced forward over the
  prompt and ``greedy[:-1]`` (it must equal ``greedy``: transformers' sliding cache checked);
* ``<name>/digest``: sha256 of the weights, so a drifting generator fails loudly.

transformers builds its sliding-window mask from cache slots, not position ids, so a pruned
prompt passed with gapped ``position_ids`` is not a reference for sliding layers; the masks
here state the rule instead. Before storing, the script checks that transformers honours them:
an all-kept mask must give the plain forward's logits.

    python scripts/make_gemma_reference.py [--out tests/engines/data/gemma_reference.npz]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GREEDY_TOKENS = 8


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "engines" / "data" / "gemma_reference.npz")
    args = parser.parse_args(argv)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from spectrace.engines.models.gemma_config import GemmaConfig
    from spectrace.engines.testing_models import (GEMMA_REFERENCE_MODELS, gemma_reference_inputs, rule_masks,
                                                  weights_digest, write_reference_model)

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, np.ndarray] = {
        "versions/transformers": np.array(transformers.__version__),
        "versions/torch": np.array(torch.__version__),
        "versions/device": np.array(torch.cuda.get_device_name() if device == "cuda" else "cpu"),
    }

    def additive(mask):  # bool [T, S] -> float32 [1, 1, T, S]: 0 where visible, the float32 minimum elsewhere
        m = torch.zeros(mask.shape, dtype=torch.float32)
        m[~torch.as_tensor(mask)] = torch.finfo(torch.float32).min
        return m[None, None].to(device)

    for name, (cfg, seed) in GEMMA_REFERENCE_MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = write_reference_model(name, Path(tmp) / name)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                         attn_implementation="eager").to(device).eval()
        read = GemmaConfig.from_hf(model.config)
        if read != cfg:
            raise SystemExit(f"{name}: transformers {transformers.__version__} reads the config as\n  {read}\n"
                             f"the engine wrote\n  {cfg}")
        inputs = gemma_reference_inputs(cfg, seed)
        n = len(inputs["ids"])
        ids = torch.tensor(inputs["ids"], device=device)[None]
        positions = torch.arange(n, device=device)[None]

        def masked_logits(keep):
            masks = {kind: additive(m) for kind, m in rule_masks(cfg, n, keep).items()}
            return model(input_ids=ids, position_ids=positions, attention_mask=masks).logits[0]

        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
            all_kept = masked_logits(np.arange(n))
            err = float((all_kept - logits).abs().max() / logits.abs().max())
            rule = masked_logits(inputs["pruned_positions"])[torch.as_tensor(inputs["pruned_positions"], device=device)]
            if err > 1e-5:  # the masks were not applied as given: no rule reference from this version
                print(f"  {name}: transformers did not honour the per-layer-type masks (all-kept mask vs "
                      f"plain forward: relative error {err:.2e}); rule_logits not stored", file=sys.stderr)
            greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                                    min_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=0,
                                    eos_token_id=None)[0, n:]
            forced_in = torch.cat([ids[0], greedy[:-1]])[None]
            forced = model(input_ids=forced_in).logits[0, n - 1:].argmax(-1)
        out[f"{name}/logits"] = logits.cpu().numpy().astype(np.float32)
        if err <= 1e-5:
            out[f"{name}/rule_logits"] = rule.cpu().numpy().astype(np.float32)
        out[f"{name}/greedy"] = greedy.cpu().numpy().astype(np.int32)
        out[f"{name}/greedy_forced"] = forced.cpu().numpy().astype(np.int32)
        out[f"{name}/digest"] = np.array(weights_digest(name))
        print(f"{name}: {type(model).__name__}, logits {tuple(logits.shape)} max|x| {float(logits.abs().max()):.3f}, "
              f"rule rows {tuple(rule.shape)}, greedy {greedy.tolist()}, forced {forced.tolist()}, "
              f"all-kept mask err {err:.1e}", flush=True)
        if greedy.tolist() != forced.tolist():
            print(f"  note: {name}: generate and the teacher-forced argmax disagree", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
