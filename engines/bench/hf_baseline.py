"""The Hugging Face transformers baseline the benches time against: one model, one prefill timing.

``engines.bench.base`` and ``engines.bench.spec`` both compare the engines with transformers'
``LlamaForCausalLM`` of the same shapes; building it and timing its prefill here keeps the two
tables measuring the same thing. Weights are random: the timing depends on shapes only, so no
checkpoint has to be converted or downloaded.

``torch`` and ``transformers`` are imported inside the functions: the benches run on a GPU
machine, but ``import spectrace.engines.bench.*`` (and the ``--no-hf`` runs the CPU tests make) must work
where PyTorch is not installed.
"""

from __future__ import annotations

import time

from spectrace.engines.config import LlamaConfig

_TORCH_DTYPES = ("bfloat16", "float16", "float32")


def hf_model(config: LlamaConfig, dtype, *, seed: int = 0):
    """Random-weight ``LlamaForCausalLM`` (or, for a :class:`GemmaConfig`, ``Gemma3ForCausalLM`` /
    ``Gemma2ForCausalLM``) of ``config`` in ``dtype`` (a JAX dtype or its name), sdpa attention
    (Gemma 2: eager, transformers' sdpa cannot soft-cap), eval mode, on the GPU when torch sees one
    (else the CPU).

    The weights are created on the device and in the target dtype directly: an 8B model built in
    float32 on the host first would need 32 GB of host memory and a slow copy.
    """
    import torch
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    if str(dtype) not in _TORCH_DTYPES:
        raise ValueError(f"no transformers baseline in dtype {dtype}; expected one of {list(_TORCH_DTYPES)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, str(dtype)))
    try:
        with torch.device(device):
            if getattr(config, "family", "llama") == "gemma":
                from transformers import AutoConfig, AutoModelForCausalLM

                body = config.to_hf_dict()
                body.pop("architectures")
                attn = "eager" if body["model_type"] == "gemma2" else "sdpa"
                hf_cfg = AutoConfig.for_model(body.pop("model_type"), **body)
                return AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=attn).eval()
            hf_cfg = HFLlamaConfig(**config.to_hf_dict())
            hf_cfg._attn_implementation = "sdpa"
            return LlamaForCausalLM(hf_cfg).eval()
    finally:
        torch.set_default_dtype(previous)


def timed_s(fn, device) -> float:
    """Seconds ``fn()`` takes, with the GPU's queue drained before and after (its kernels run async)."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def prefill_s(model, input_ids) -> float:
    """Seconds of one full prefill of ``input_ids`` [1, P] until the last token's logits are on the host.

    ``logits_to_keep=1`` computes the LM head for the last position only, and the host copy is
    timed, like the engines' TTFT (``prefill_from_ids`` ends with the logits on the host).
    """
    import torch

    with torch.inference_mode():
        return timed_s(lambda: model(input_ids=input_ids, logits_to_keep=1).logits[:, -1].float().cpu(),
                       input_ids.device)


def prefill_text_s(model, tokenizer, prompt: str) -> float:
    """Seconds from the prompt *string* to the last token's logits on the host: the tokenizer call
    (one ``tokenizer(prompt)``, as a transformers user writes it), the copy of the ids to the
    device, then :func:`prefill_s`'s forward. The engines' TTFT fields start at the string too
    (their ``tokenize`` span), so this is the like-for-like reference."""
    import torch

    def run():
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
        return model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().cpu()

    with torch.inference_mode():
        return timed_s(run, model.device)
