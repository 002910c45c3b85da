"""Make tests/engines/data/reference.npz: Hugging Face transformers' logits for the test models.

Needs PyTorch (``pip install torch``); CI does not: it only reads the .npz. For every model in
``engines.testing_models.REFERENCE_MODELS`` this writes the seeded checkpoint, loads it with
``transformers.LlamaForCausalLM`` (float32, eager attention) and stores:

* ``<name>/logits``        [SEQ_LEN, V]: the full sequence, positions 0..SEQ_LEN-1;
* ``<name>/pruned_logits`` [P, V]: the pruned subset with its original (gapped) position ids;
* ``<name>/greedy``        [8]: ``generate`` greedy continuation of the full sequence;
* ``<name>/digest``: sha256 of the weights, so a drifting generator fails loudly.

Run: ``python scripts/make_reference.py [--out tests/engines/data/reference.npz]``
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
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "engines" / "data" / "reference.npz")
    args = parser.parse_args(argv)

    import torch
    import transformers
    from transformers import LlamaForCausalLM

    from spectrace.engines.testing_models import REFERENCE_MODELS, reference_inputs, weights_digest, write_reference_model

    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {
        "versions/transformers": np.array(transformers.__version__),
        "versions/torch": np.array(torch.__version__),
    }
    for name, (cfg, seed) in REFERENCE_MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = write_reference_model(name, Path(tmp) / name)
            model = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="eager")
            model.eval()
            inputs = reference_inputs(cfg, seed)
            with torch.no_grad():
                ids = torch.tensor(inputs["ids"])[None]
                logits = model(input_ids=ids).logits[0]
                pruned = model(input_ids=torch.tensor(inputs["pruned_ids"])[None],
                               position_ids=torch.tensor(inputs["pruned_positions"])[None]).logits[0]
                greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY_TOKENS,
                                        min_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=0,
                                        eos_token_id=None)[0, ids.shape[1]:]
        out[f"{name}/logits"] = logits.numpy().astype(np.float32)
        out[f"{name}/pruned_logits"] = pruned.numpy().astype(np.float32)
        out[f"{name}/greedy"] = greedy.numpy().astype(np.int32)
        out[f"{name}/digest"] = np.array(weights_digest(name))
        print(f"{name}: logits {tuple(logits.shape)} max|x| {float(logits.abs().max()):.3f}, greedy {greedy.tolist()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
