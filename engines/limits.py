"""What a run may ask for: options bounded by the models and by the machine, checked before any work.

``--prompt-len 10**12`` must be one line at once rather than a hang, ``--ctx-len 10**9`` one
line rather than an out-of-memory kill, and a prompt longer than the model's
``max_position_embeddings`` a refusal naming both numbers. Every check here raises
:class:`~spectrace.tracer.errors.UserError` with the option, the value and the limit.
"""

from __future__ import annotations

from spectrace.tracer.errors import UserError

DEFAULT_PROMPT_TOKENS = 3000
_DEFAULT_PAIR = ("default-base", "default-draft")


def devices_for(indices, which):
    """The JAX devices of ``--{which}-devices`` indices (None: the default), or a one-line refusal."""
    if indices is None:
        return None
    import jax

    devs = jax.devices()
    bad = [i for i in indices if not 0 <= i < len(devs)]
    if bad or not indices:
        given = ",".join(map(str, indices)) or repr("")
        raise UserError(f"spectrace: --{which}-devices {given} names device(s) {bad} that do not exist; this "
                        f"machine has {len(devs)} device(s) 0..{len(devs) - 1} ({devs[0].platform})")
    return [devs[i] for i in indices]


def seq_len(args) -> int:
    if args.prefill_seq_len:
        return args.prefill_seq_len
    return 128 if (args.base, args.draft) == _DEFAULT_PAIR else 2048


def max_position(models) -> tuple[int, str]:
    role, (name, cfg) = min(models.items(), key=lambda kv: kv[1][1].max_position)
    return cfg.max_position, f"the {role} model's ({name}) max_position_embeddings"


def check_prompt(args, models, n_tokens: int, *, room: int, what: str) -> None:
    """A prompt of ``n_tokens`` (plus ``room`` generated/look-ahead positions) must fit the models."""
    limit, label = max_position(models)
    if n_tokens > limit:
        raise UserError(f"spectrace: {what} {n_tokens} tokens, more than {label} {limit}")
    if n_tokens + room > limit:
        extra = f"--gen-len {args.gen_len}" + (f" and --look-ahead {args.look_ahead}" if room > args.gen_len else "")
        raise UserError(f"spectrace: {what} {n_tokens} tokens; with {extra} that needs {n_tokens + room} "
                        f"positions, more than {label} {limit}")


def check_limits(args, models, *, prompt_len: int | None, room: int) -> None:
    """Refuse numeric options the models (max_position_embeddings) or the memory cannot take.

    Runs before any weight is loaded or any prompt is built, so ``--prompt-len 10**12`` is one
    line at once rather than a hang, and ``--ctx-len 10**9`` one line rather than an
    out-of-memory kill. The memory figure is an estimate (weights, KV caches of the context,
    one chunk's fp32 attention scores) against what the device reports free.
    """
    limit, label = max_position(models)
    for opt, value in (("--prompt-len", prompt_len if args.prompt_len else None), ("--ctx-len", args.ctx_len),
                       ("--gen-len", args.gen_len), ("--look-ahead", getattr(args, "look_ahead", None)),
                       ("--prefill-seq-len", args.prefill_seq_len)):
        if value is not None and value > limit:
            raise UserError(f"spectrace: {opt} {value} is more than {label} {limit}")
    if prompt_len is not None and args.prompt_text is None:
        check_prompt(args, models, prompt_len, room=room, what="--prompt-len asks for")
    seq = seq_len(args)
    tokens = args.ctx_len or (0 if args.prompt_text is not None else prompt_len or DEFAULT_PROMPT_TOKENS) + room
    check_memory(args, models, slots=-(tokens // -seq) * seq, seq=seq)


def check_memory(args, models, *, slots: int, seq: int, weights: bool = True) -> None:
    """Refuse a run whose estimated memory exceeds the device's free memory (``weights``: count
    them too; False once they are loaded, so they are already out of the free figure)."""
    import jax

    device = devices_for(args.base_devices, "base") or jax.devices()[:1]
    platform = device[0].platform
    itemsize = {"float32": 4, "bfloat16": 2}.get(args.dtype) or (4 if platform == "cpu" else 2)
    weights = sum(cfg.weight_bytes(itemsize) for _, cfg in models.values()) if weights else 0
    kv = sum(cfg.kv_cache_bytes(slots, itemsize) for _, cfg in models.values())
    scores = max(cfg.n_heads for _, cfg in models.values()) * seq * slots * 4
    need = weights + kv + scores
    if len(device) > 1:  # tensor-parallel: each device holds about its share (an estimate, as the rest)
        need = -(need // -len(device))
    free, source = free_memory(device[0])
    if free is not None and need > free:
        gib = lambda b: f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"  # noqa: E731
        raise UserError(f"spectrace: this run needs about {gib(need)} ({gib(weights)} weights, {gib(kv)} KV cache "
                        f"for {slots} positions (--ctx-len/--prompt-len/--gen-len), {gib(scores)} attention scores "
                        f"per --prefill-seq-len {seq} chunk), more than the {gib(free)} free on {platform} ({source})")


def free_memory(device) -> tuple[int | None, str]:
    """Bytes the device can still allocate, and where that figure came from (None: unknown)."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
        pass
    if stats and stats.get("bytes_limit"):
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0), "the device's bytes_limit - bytes_in_use"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None, "unknown"
