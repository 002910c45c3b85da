"""What a Llama model is (:class:`LlamaConfig`) and how an engine runs any model (:class:`EngineOptions`).

Gemma's config is :class:`spectrace.engines.models.gemma_config.GemmaConfig`; both share the
field names the engine reads (``n_layers``, ``n_heads``, ``head_dim``, ``layer_windows``, ...).

Both are frozen, hashable dataclasses: they are passed to ``jax.jit`` as static arguments, so two
engines with equal configs share compiled functions, and tests shrink them with
``dataclasses.replace``. Everything derived (query heads per KV head, parameter count) is a
property, never a stored field that could disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as Hugging Face's ``rope_parameters`` describes it.

    ``rope_type`` ``"linear"`` divides every inverse frequency by ``factor``; ``"llama3"``
    (Llama 3.1/3.2) divides only the low frequencies and interpolates the middle band, with
    ``low_freq_factor``, ``high_freq_factor`` and ``original_max_position``.
    """

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192

    def __post_init__(self) -> None:
        if self.rope_type not in ("linear", "llama3"):
            raise ValueError(f"rope_type={self.rope_type!r} is not supported; use one of "
                             f"{_ROPE_TYPES} (\"default\" means no RopeScaling at all)")
        if self.factor <= 0:
            raise ValueError(f"RoPE scaling factor={self.factor} must be > 0")
        if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(f"llama3 RoPE needs high_freq_factor > low_freq_factor, got "
                             f"{self.high_freq_factor} <= {self.low_freq_factor}")


class ModelSizes:
    """Memory sizes every model family's config derives from its ``num_params`` and cache shape.

    Every layer, sliding ones included, holds ``slots`` cache positions (docs/gemma.md says why).
    """

    def weight_bytes(self, itemsize: int) -> int:
        """Bytes of the weights at ``itemsize`` bytes per parameter (4 float32, 2 bfloat16)."""
        return self.num_params * itemsize

    def kv_cache_bytes(self, slots: int, itemsize: int, batch: int = 1) -> int:
        """Bytes of a KV cache of ``slots`` positions: keys and values, L x [B, S, K, H] each."""
        return 2 * self.n_layers * batch * slots * self.n_kv_heads * self.head_dim * itemsize


@dataclass(frozen=True)
class LlamaConfig(ModelSizes):
    """Shape and hyper-parameters of a Llama-architecture decoder.

    Axis letters used across ``engines``: L ``n_layers``, D ``dim``, N ``n_heads``,
    K ``n_kv_heads``, H ``head_dim`` (independent of ``dim // n_heads``), F ``ffn_dim``,
    V ``vocab_size``.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    rms_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False
    max_position: int = 131072
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaConfig.{name}={value!r} must be a positive int")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} "
                             "(grouped query attention shares each KV head among n_heads/n_kv_heads queries)")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even (RoPE rotates pairs of dimensions)")
        if not isinstance(self.max_position, int) or isinstance(self.max_position, bool) or self.max_position < 1:
            raise ValueError(f"LlamaConfig.max_position={self.max_position!r} must be a positive int")
        for name in ("rms_eps", "rope_theta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"LlamaConfig.{name}={value!r} must be a positive finite number")

    @property
    def q_per_kv(self) -> int:
        """G: query heads that read the same KV head."""
        return self.n_heads // self.n_kv_heads

    family = "llama"  # which engines.models module runs it

    @property
    def layer_windows(self) -> tuple:
        """Per layer: the sliding window, or None for full attention (Llama: all full)."""
        return (None,) * self.n_layers

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, h = self.dim, self.head_dim
        attn = d * h * (self.n_heads * 2 + self.n_kv_heads * 2)
        mlp = 3 * d * self.ffn_dim
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * per_layer + d + head

    # ---- Hugging Face config.json <-> LlamaConfig -------------------------------------------
    @classmethod
    def from_hf(cls, hf) -> LlamaConfig:
        """Build from a ``transformers`` config object (4.x ``rope_scaling`` or 5.x ``rope_parameters``)."""
        rope = getattr(hf, "rope_parameters", None) or {}
        if not rope:  # transformers 4.x keeps theta and scaling apart
            rope = dict(getattr(hf, "rope_scaling", None) or {})
            rope.setdefault("rope_theta", getattr(hf, "rope_theta", 10000.0))
        if not isinstance(rope, dict):
            raise ValueError(f"rope_parameters must be an object, got {rope!r}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in _ROPE_TYPES:
            raise ValueError(f"RoPE type {rope_type!r} in config.json is not supported; supported: {_ROPE_TYPES}")
        scaling = None
        if rope_type != "default" and not isinstance(rope.get("factor"), (int, float)):
            raise ValueError(f"RoPE type {rope_type!r} needs a numeric 'factor', got {rope.get('factor')!r}")
        if rope_type != "default":
            scaling = RopeScaling(
                rope_type=rope_type,
                factor=float(rope["factor"]),
                low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                original_max_position=int(rope.get("original_max_position_embeddings",
                                                   hf.max_position_embeddings)),
            )
        n_heads = hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // n_heads
        eos = hf.eos_token_id
        return cls(
            vocab_size=hf.vocab_size, dim=hf.hidden_size, n_layers=hf.num_hidden_layers,
            n_heads=n_heads, n_kv_heads=getattr(hf, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim, ffn_dim=hf.intermediate_size, rms_eps=float(hf.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", 10000.0)), rope_scaling=scaling,
            tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            max_position=hf.max_position_embeddings,
            bos_token_id=hf.bos_token_id, eos_token_id=eos[0] if isinstance(eos, list) else eos,
        )

    def to_hf_dict(self) -> dict:
        """Keyword arguments for ``transformers.LlamaConfig`` describing the same model."""
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            s = self.rope_scaling
            rope = {"rope_type": s.rope_type, "rope_theta": self.rope_theta, "factor": s.factor}
            if s.rope_type == "llama3":
                rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                            original_max_position_embeddings=s.original_max_position)
        return dict(
            architectures=["LlamaForCausalLM"], vocab_size=self.vocab_size, hidden_size=self.dim,
            intermediate_size=self.ffn_dim, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads,
            head_dim=self.head_dim, rms_norm_eps=self.rms_eps, max_position_embeddings=self.max_position,
            tie_word_embeddings=self.tie_embeddings, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, hidden_act="silu", attention_bias=False, mlp_bias=False,
            rope_parameters=rope,
            # transformers 4.x reads these two instead of rope_parameters
            rope_theta=self.rope_theta, rope_scaling=None if self.rope_scaling is None else dict(rope),
        )


_CHOICES = {
    "decode": ("scan", "python"),
    "prefill": ("chunked", "python"),
    "qkv": ("fused", "separate"),
    "attention": ("dot_product", "batched", "vmap"),
    "last_chunk": ("fit", "full"),
    "mlp": ("xla", "epilogue"),
}

FIT_MULTIPLE = 128  # ``last_chunk="fit"`` pads the final chunk to a multiple of this many tokens


@dataclass(frozen=True)
class EngineOptions:
    """Implementation switches, the experiments of seed 003, so they can be measured against each other.

    * ``decode``: ``"scan"`` runs the whole greedy decode as one compiled ``lax.scan`` and reads
      tokens back once; ``"python"`` loops in Python over a compiled one-token step and reads each
      token back (streaming style).
    * ``prefill``: ``"chunked"`` runs one compiled call per ``prefill_seq_len`` chunk;
      ``"python"`` feeds the prompt one token at a time through the compiled one-token step.
    * ``qkv``: ``"fused"`` projects Q, K and V with one matmul against concatenated weights, and
      likewise the MLP's gate and up; ``"separate"`` uses three (and two).
    * ``attention``: ``"batched"`` computes all query rows' scores as one Q·Kᵀ (seed 003's
      best); ``"vmap"`` maps a one-query attention over the query rows (its baseline);
      ``"dot_product"`` calls ``jax.nn.dot_product_attention``: cuDNN flash attention on GPU in
      bf16, so the [T, S] scores never reach HBM (3x faster prefill than ``"batched"`` for
      Llama-3.2-1B at 10741 tokens on an H100), XLA elsewhere (also faster on CPU).

    * ``last_chunk``: ``"full"`` pads the final chunk to ``prefill_seq_len`` (QEfficient's fixed
      shape); ``"fit"`` pads it only to the next multiple of ``FIT_MULTIPLE`` (128) tokens, at
      the cost of one more compiled shape per distinct tail length (at most
      ``prefill_seq_len / 128``). The chunk count is the same either way; ``padded_len`` is the
      length actually computed. A 1077-token pruned prompt at ``prefill_seq_len`` 2048 computes
      1152 rows instead of 2048. (The speculative engine's queued pruned chunk is fitted to
      its kept-token bound rounded up to 16 rows instead, ``engines.speculative.handover.
      PRUNED_MULTIPLE``: up to ``prefill_seq_len / 16`` shapes; 1104 rows for a 10741-token
      prompt at keep 0.10.)

    * ``mlp``: ``"xla"`` leaves a prefill chunk's SwiGLU to XLA (the gate|up GEMM, then a kernel
      for ``silu(gate) * up``); ``"epilogue"`` interleaves the gate|up weight so that a Hopper
      GEMM applies SwiGLU before its store (``engines.swiglu_gemm``; XLA's GEMM on the same
      weight elsewhere). Needs ``qkv="fused"`` (separate weights take XLA's path either way).

    Defaults are the fast variants. All variants compute the same function.
    """

    decode: str = "scan"
    prefill: str = "chunked"
    qkv: str = "fused"
    attention: str = "dot_product"
    last_chunk: str = "fit"
    mlp: str = "xla"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value not in _CHOICES[field.name]:
                raise ValueError(f"EngineOptions.{field.name}={value!r}; choose one of {_CHOICES[field.name]}")
