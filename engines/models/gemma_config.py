"""What a Gemma 2 or Gemma 3 text model is: :class:`GemmaConfig`, read from and written to config.json.

As Hugging Face ``transformers`` implements them (``Gemma2ForCausalLM``, ``Gemma3ForCausalLM`` /
``Gemma3TextConfig``). Both have sliding-window and full-attention layers (``layer_types``),
attention scaled by ``query_pre_attn_scalar ** -0.5``, (1 + w) RMSNorms in float32, four norms
per layer, GeGLU (gelu-tanh), embeddings times sqrt(hidden) and tied embeddings. Gemma 2
alternates sliding/full from layer 0 and soft-caps attention and final logits; Gemma 3 has
QK-norm, full layers where ``(i + 1) % 6 == 0``, and two RoPE bases (``rope_theta`` on full
layers, with any rope scaling; ``rope_local_base_freq`` on sliding ones).

Frozen and hashable like :class:`~spectrace.engines.config.LlamaConfig` (a static argument of the
compiled functions), with the same field names where the two families agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectrace.engines.config import ModelSizes, RopeScaling

SLIDING, FULL = "sliding_attention", "full_attention"
MODEL_TYPES = {"gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
GELU_TANH = ("gelu_pytorch_tanh",)  # transformers' ACT2FN name of gelu(approximate="tanh")


def gemma3_layer_types(n_layers: int, pattern: int = 6) -> tuple[str, ...]:
    """Gemma 3's default: full attention where ``(i + 1) % pattern == 0``, else sliding."""
    return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n_layers))


def gemma2_layer_types(n_layers: int) -> tuple[str, ...]:
    """Gemma 2's: sliding on even layers (0, 2, ...), full on odd ones."""
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(n_layers))


@dataclass(frozen=True)
class GemmaConfig(ModelSizes):
    """Shape and hyper-parameters of a Gemma 2 / Gemma 3 text decoder (axis letters as LlamaConfig's).

    ``model_type``: ``"gemma3_text"`` or ``"gemma2"``. ``rope_theta`` / ``rope_scaling`` apply to
    full-attention layers, ``rope_local_theta`` to sliding ones (Gemma 2: the same theta).
    ``attn_softcap`` / ``final_softcap``: ``tanh(x / c) * c`` on attention scores / logits.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    layer_types: tuple
    sliding_window: int
    query_pre_attn_scalar: float
    model_type: str = "gemma3_text"
    rms_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_local_theta: float = 10_000.0
    rope_scaling: RopeScaling | None = None
    qk_norm: bool = True
    attn_softcap: float | None = None
    final_softcap: float | None = None
    tie_embeddings: bool = True
    max_position: int = 131072
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    family = "gemma"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim",
                     "sliding_window", "max_position"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GemmaConfig.{name}={value!r} must be a positive int")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"GemmaConfig.model_type={self.model_type!r}; supported: {list(MODEL_TYPES)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even (RoPE rotates pairs of dimensions)")
        if not isinstance(self.layer_types, tuple) or len(self.layer_types) != self.n_layers or any(
                t not in (SLIDING, FULL) for t in self.layer_types):
            raise ValueError(f"layer_types must be a tuple of {self.n_layers} entries, each {SLIDING!r} or "
                             f"{FULL!r}; got {self.layer_types!r}")
        for name in ("rms_eps", "rope_theta", "rope_local_theta", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"GemmaConfig.{name}={value!r} must be a positive finite number")
        for name in ("attn_softcap", "final_softcap"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"GemmaConfig.{name}={value!r} must be None or a positive number")

    # ---- derived ------------------------------------------------------------------------------
    @property
    def q_per_kv(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def layer_windows(self) -> tuple:
        """Per layer: ``sliding_window`` on a sliding layer, None on a full-attention one."""
        return tuple(self.sliding_window if t == SLIDING else None for t in self.layer_types)

    @property
    def full_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == FULL)

    @property
    def num_params(self) -> int:
        d, h = self.dim, self.head_dim
        attn = d * h * (self.n_heads * 2 + self.n_kv_heads * 2) + (2 * h if self.qk_norm else 0)
        per_layer = attn + 3 * d * self.ffn_dim + 4 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.n_layers * per_layer + d + head

    # ---- Hugging Face config <-> GemmaConfig ---------------------------------------------------
    @classmethod
    def from_hf(cls, hf) -> GemmaConfig:
        """Build from a transformers ``Gemma2Config`` / ``Gemma3TextConfig`` (4.x or 5.x rope fields)."""
        model_type = getattr(hf, "model_type", None)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={model_type!r} is not a Gemma text model; supported: {list(MODEL_TYPES)}")
        act = getattr(hf, "hidden_activation", None) or getattr(hf, "hidden_act", None)
        if act not in GELU_TANH:
            raise ValueError(f"hidden_activation={act!r}; only {GELU_TANH[0]!r} (GeGLU with gelu-tanh) is supported")
        if getattr(hf, "use_bidirectional_attention", False):
            raise ValueError("use_bidirectional_attention=true is not supported (causal decoders only)")
        if getattr(hf, "attention_bias", False):
            raise ValueError("attention_bias=true is not supported (Gemma has no biases)")
        gemma2 = model_type == "gemma2"
        full, local = _rope_of(hf, gemma2)
        if gemma2 and full[1] is not None:
            raise ValueError(f"gemma2 with RoPE scaling {full[1]!r} is not supported")
        n_layers = hf.num_hidden_layers
        layer_types = tuple(getattr(hf, "layer_types", None) or
                            (gemma2_layer_types(n_layers) if gemma2 else gemma3_layer_types(n_layers)))
        eos = hf.eos_token_id
        return cls(
            vocab_size=hf.vocab_size, dim=hf.hidden_size, n_layers=n_layers, n_heads=hf.num_attention_heads,
            n_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads,
            ffn_dim=hf.intermediate_size, layer_types=layer_types, sliding_window=int(hf.sliding_window),
            query_pre_attn_scalar=float(hf.query_pre_attn_scalar), model_type=model_type,
            rms_eps=float(hf.rms_norm_eps), rope_theta=full[0], rope_local_theta=local, rope_scaling=full[1],
            qk_norm=not gemma2,
            # Gemma 3's attention in transformers never applies attn_logit_softcapping (it is not
            # passed to the attention function), so neither do we: the logits must agree.
            attn_softcap=_opt_float(getattr(hf, "attn_logit_softcapping", None)) if gemma2 else None,
            final_softcap=_opt_float(getattr(hf, "final_logit_softcapping", None)),
            tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)),
            max_position=hf.max_position_embeddings, bos_token_id=hf.bos_token_id,
            eos_token_id=eos[0] if isinstance(eos, list) else eos)

    def to_hf_dict(self) -> dict:
        """config.json's keys for this model (transformers 5.x names; ``rope_parameters`` per layer type)."""
        def rope(theta, scaling):
            if scaling is None:
                return {"rope_type": "default", "rope_theta": theta}
            out = {"rope_type": scaling.rope_type, "rope_theta": theta, "factor": scaling.factor}
            if scaling.rope_type == "llama3":
                out.update(low_freq_factor=scaling.low_freq_factor, high_freq_factor=scaling.high_freq_factor,
                           original_max_position_embeddings=scaling.original_max_position)
            return out

        body = dict(
            architectures=[MODEL_TYPES[self.model_type]], model_type=self.model_type, vocab_size=self.vocab_size,
            hidden_size=self.dim, intermediate_size=self.ffn_dim, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads, head_dim=self.head_dim,
            hidden_activation=GELU_TANH[0], rms_norm_eps=self.rms_eps, max_position_embeddings=self.max_position,
            tie_word_embeddings=self.tie_embeddings, bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id, pad_token_id=0, attention_bias=False, attention_dropout=0.0,
            # transformers' strict config wants an int here (every released Gemma has one)
            query_pre_attn_scalar=(int(self.query_pre_attn_scalar) if float(self.query_pre_attn_scalar).is_integer()
                                   else self.query_pre_attn_scalar), sliding_window=self.sliding_window,
            layer_types=list(self.layer_types), final_logit_softcapping=self.final_softcap,
            attn_logit_softcapping=self.attn_softcap)
        if self.model_type == "gemma2":
            body["rope_parameters"] = rope(self.rope_theta, None)
        else:
            body["rope_parameters"] = {FULL: rope(self.rope_theta, self.rope_scaling),
                                       SLIDING: rope(self.rope_local_theta, None)}
        return body


def _opt_float(value):
    return None if value is None else float(value)


def _rope_of(hf, gemma2: bool):
    """((full theta, full RopeScaling or None), sliding theta) from 5.x ``rope_parameters`` or 4.x fields."""
    params = getattr(hf, "rope_parameters", None) or {}
    if gemma2:
        full = params if params and "rope_theta" in params else {
            **dict(getattr(hf, "rope_scaling", None) or {}), "rope_theta": getattr(hf, "rope_theta", 10000.0)}
        theta, scaling = float(full.get("rope_theta", 10000.0)), _scaling(full)
        return (theta, scaling), theta
    if FULL in params:
        full, local = params[FULL] or {}, params.get(SLIDING) or {}
    else:  # transformers 4.x: rope_theta, rope_local_base_freq, rope_scaling (full layers)
        full = {**dict(getattr(hf, "rope_scaling", None) or {}), "rope_theta": getattr(hf, "rope_theta", 1e6)}
        local = {"rope_type": "default", "rope_theta": getattr(hf, "rope_local_base_freq", 1e4)}
    if _scaling(local) is not None:
        raise ValueError(f"RoPE scaling on sliding layers ({local!r}) is not supported; Gemma 3 scales full layers only")
    return (float(full.get("rope_theta", 1e6)), _scaling(full)), float(local.get("rope_theta", 1e4))


def _scaling(rope: dict) -> RopeScaling | None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise ValueError(f"RoPE type {kind!r} is not supported; supported: ('default', 'linear', 'llama3')")
    if not isinstance(rope.get("factor"), (int, float)):
        raise ValueError(f"RoPE type {kind!r} needs a numeric 'factor', got {rope.get('factor')!r}")
    return RopeScaling(rope_type=kind, factor=float(rope["factor"]),
                       low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
                       high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
                       original_max_position=int(rope.get("original_max_position_embeddings", 8192)))
