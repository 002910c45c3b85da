"""The base engine: chunked prefill into a preallocated KV cache, then greedy decode on the device.

Prefill follows DESIGN.md's two-stage tokenization (``padding=True``, then ``padding="max_length"``
to ``num_chunks * prefill_seq_len``) and runs one compiled chunk function per slice. Decode is one
compiled ``lax.scan``; tokens come back to the host once.

Instrumentation sits only at the host boundary (STYLE.md rule 5): ``tokenize`` (stage
``bootstrap`` / ``max_length``), ``bind`` (cache allocation and input placement), one
``prefill.chunk`` per chunk ending after ``block_until_ready()``, every host<->device copy under
its binding category, and a ``decode`` window. The prompt text is never recorded.

A span ends when the host sees its work done; the next program may already be queued behind it
(``prefetch``, ``queue_decode``, the speculative engine's scoring), so the device does not wait
for the host between them, and the first fraction of a millisecond of the next program's device
ops can fall inside the span before it (the host's wake-up, ~0.5 ms on the H200 host).
"""

from __future__ import annotations

import contextlib
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from spectrace import tracer
from spectrace.engines import model, swiglu_gemm
from spectrace.engines.cache import KVCache, allocate_cache, reset_cache
from spectrace.engines.config import FIT_MULTIPLE, EngineOptions
from spectrace.engines.decode import DecodeMixin
from spectrace.engines.fixed_buffers import FixedBuffers, enabled
from spectrace.engines.host import _group_label, _h2d, chunk_xla, decode_xla, prefetch, to_host
from spectrace.engines.loading import LoadMixin
from spectrace.engines.params import for_options
from spectrace.engines.results import PrefillResult, QueuedPrefill
from spectrace.engines.tokenizer import encode


class BaseEngine(LoadMixin, DecodeMixin):
    """A Llama or Gemma model on one device with a KV cache for ``ctx_len`` tokens.

    Build with :meth:`from_pretrained`. ``name`` is the ``engine`` attribute of its chunk spans
    (the speculative engine's draft uses ``"spec"``).
    """

    def __init__(self, cfg, params: dict, tokenizer, *, prefill_seq_len: int, ctx_len: int,
                 device, options: EngineOptions | None = None, name: str = "base", model_name: str = "llama"):
        for pname, value in (("prefill_seq_len", prefill_seq_len), ("ctx_len", ctx_len)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{pname}={value!r} must be a positive int")
        self.config = cfg
        self.options = swiglu_gemm.options_for(options or EngineOptions(), name)
        self.mesh = None  # a jax.sharding.Mesh when ``device`` is a group of several (engines.sharding)
        self.devices = list(device) if isinstance(device, (list, tuple)) else [device]
        if len(self.devices) > 1:  # device becomes the group's replicated sharding: where inputs go
            from spectrace.engines.sharding import tensor_parallel
            self.mesh, self.options, self.params, device = tensor_parallel(cfg, params, self.options, self.devices)
        else:
            device = self.devices[0]
            self.params = for_options(params, cfg, self.options)
        # Spans name the device group when it is not the default device (disjoint draft/base groups).
        self._group = {} if self.mesh is None and device == jax.devices()[0] else {"devices": _group_label(self.devices)}
        #: The group label transfers carry as ``src``/``dst`` ("" on the default device, like the spans).
        self.where = self._group.get("devices", "")
        self.tokenizer = tokenizer
        if getattr(tokenizer, "padding_side", "right") != "right":
            tokenizer.padding_side = "right"  # padding must trail the prompt: it is the chunk loop's tail
        self.prefill_seq_len = int(prefill_seq_len)
        self.device = device
        self.dtype = jnp.dtype(jax.tree_util.tree_leaves(self.params)[0].dtype)
        self.name = name
        self.model_name = model_name
        self.chunk_xla = chunk_xla(name, self.devices[0].platform)
        self.decode_xla = decode_xla(name, self.devices[0].platform)
        self._serial = 0
        #: Chunks at fixed device addresses (``engines.fixed_buffers``), or None.
        self.fixed = FixedBuffers() if enabled(name) else None
        self.resize(int(ctx_len))
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = pad if isinstance(pad, int) and 0 <= pad < cfg.vocab_size else 0

    def resize(self, ctx_len: int) -> None:
        """Change the context length without reloading weights; drops the KV cache."""
        if not isinstance(ctx_len, (int, np.integer)) or isinstance(ctx_len, bool) or ctx_len < 1:
            raise ValueError(f"ctx_len={ctx_len!r} must be a positive int")
        self.ctx_len = int(ctx_len)
        self.cache_slots = self._slots_for(self.ctx_len)
        self.cache: KVCache | None = None
        if self.fixed is not None:  # a new cache: start the kept chunk arrays afresh too
            self.fixed.clear()
        self._cache_len = 0
        self._next_position = 0  # one past the largest position in the cache
        self._serial += 1

    def _slots_for(self, ctx_len: int) -> int:
        """KV cache slots for ``ctx_len`` tokens: enough for any prefill's padded rows.

        A full last chunk (``last_chunk="full"``) needs ctx_len rounded up to whole chunks. A
        fitted one computes at most ``FIT_MULTIPLE - 1`` padding rows past the real tokens, so
        ctx_len rounded up to ``FIT_MULTIPLE``, plus one ``FIT_MULTIPLE`` for a continued prompt
        that starts mid-block, always fits, and every decode step's attention reads only these
        slots: at prefill_seq_len 16384 and a 10757-token context, 11008 slots instead of 16384
        (a third less cache memory, and a third less for each look-ahead and decode step to read).
        """
        full = -(ctx_len // -self.prefill_seq_len) * self.prefill_seq_len
        if self.options.last_chunk == "full" or self.options.prefill == "python":
            return full
        return min(full, -(ctx_len // -FIT_MULTIPLE) * FIT_MULTIPLE + FIT_MULTIPLE)

    # ---- compiled functions ------------------------------------------------------------------
    def chunk_fn(self, *, return_queries: bool = False, into: bool = False):
        """The compiled chunk function for this engine's config and options.

        ``fn(params, cache, inputs[2, B, T], fresh=False) -> (logits[B, V] float32, cache, q_rows)``:
        ``inputs`` stacks the tokens and their positions (padding at position -1, at the end);
        ``q_rows`` is ``[L, B, N, H]`` float32, the post-RoPE query of the last real row in every
        layer, or None without ``return_queries`` (``fn(..., inputs, query_row)``: another row's).
        ``fresh=True`` starts a new prompt at slot 0, dropping what the cache held. The cache is donated.
        Compiled once per chunk length T and ``fresh``. ``into``: ``fn(params, cache, inputs,
        into, fresh=False)``, writing the logits and query rows over ``into``'s (donated) buffers
        (``model.chunk_into_jit``, ``engines.fixed_buffers``).
        """
        jit = model.chunk_into_jit if into else model.chunk_jit
        return partial(jit(self.chunk_xla), cfg=self.config, opts=self.options, return_queries=return_queries)

    # ---- tokenization ------------------------------------------------------------------------
    def tokenize(self, prompt: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Two-stage tokenization; returns (ids [C*T], positions [C*T] with -1 for padding, num_chunks).

        Stage ``bootstrap`` runs the tokenizer (QEfficient: ``padding=True``, a no-op for one
        sequence) to learn the length and the chunk count; long prompts are encoded in parallel
        pieces where that gives the same ids (``engines.tokenizer.encode``). Stage ``max_length``
        pads to ``num_chunks * prefill_seq_len``. QEfficient runs the tokenizer again for that;
        for one right-padded sequence the second call returns the first call's ids followed by
        pad ids (tested), so the padding is done here instead of tokenizing the prompt twice
        (~20 ms at 10k tokens).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}; use prefill_from_ids for token ids")
        if not prompt:
            raise ValueError("prompt='' is empty; give at least one character")
        T = self.prefill_seq_len
        with tracer.span("tokenize", stage="bootstrap", engine=self.name):
            first = encode(self.tokenizer, prompt)                              # [P] int32
        padded_len = len(first)
        if padded_len == 0:
            raise ValueError("prompt tokenizes to no tokens")
        num_chunks = -(padded_len // -T)
        with tracer.span("tokenize", stage="max_length", engine=self.name):
            ids = np.full(num_chunks * T, self.tokenizer.pad_token_id, np.int32)
            ids[:padded_len] = first
            positions = np.full(num_chunks * T, -1, np.int32)
            positions[:padded_len] = np.arange(padded_len)
        if ids.max() >= self.config.vocab_size:
            raise ValueError(f"the tokenizer produced token id {ids.max()}, beyond the model's "
                             f"vocab_size={self.config.vocab_size}: tokenizer and checkpoint do not match")
        return ids, positions, num_chunks

    # ---- prefill -----------------------------------------------------------------------------
    def prefill(self, prompt: str, *, window: str | None = "ttft.baseline", return_queries: bool = False,
                on_chunk=None) -> PrefillResult:
        """Tokenize ``prompt`` and prefill it into a fresh cache; the result holds the last token's logits.

        ``window``: the tracer window this pass opens (None: none, the caller has one).
        ``on_chunk(index, q_rows)``: called inside each chunk's span after the chunk finished,
        with the chunk's ``[L, N, H]`` queries (device) when ``return_queries``, else None.
        """
        t0 = time.perf_counter()
        attrs = {"engine": self.name, "gen_ai.request.model": self.model_name}
        with tracer.window(window, **attrs) if window else contextlib.nullcontext(tracer.NOOP) as w:
            tokenized = self.tokenize(prompt)
            n_real = int((tokenized[1] >= 0).sum())
            w.set("gen_ai.usage.input_tokens", n_real)
            return self.prefill_tokenized(*tokenized, return_queries=return_queries, on_chunk=on_chunk, t0=t0,
                                          bind_attrs={"engine": self.name} if window else None)

    def prefill_tokenized(self, ids, positions, num_chunks: int, *, return_queries: bool = False, on_chunk=None,
                          host_logits: bool = True, on_last_dispatch=None, t0: float | None = None,
                          bind_attrs=None) -> PrefillResult:
        """Prefill what :meth:`tokenize` returned (padded ``ids``, ``positions`` and ``num_chunks``)
        into a fresh cache, with :meth:`prefill_from_ids`'s other arguments, without taking the
        padding off to check and put it back (~0.2 ms of the speculative TTFT's host time on the
        2-core dev host, before the draft's first chunk). ``bind_attrs``: the ``bind`` span's
        attributes (default: the GenAI ones, as :meth:`prefill_from_ids` without a window).
        """
        if len(ids) != num_chunks * self.prefill_seq_len or len(positions) != len(ids):
            raise ValueError(f"prefill_tokenized: {len(ids)} ids and {len(positions)} positions are not "
                             f"num_chunks={num_chunks} chunks of {self.prefill_seq_len}: pass tokenize()'s output")
        n_real = int((positions >= 0).sum())
        self._check_fits(n_real, continue_cache=False)
        if bind_attrs is None:
            bind_attrs = {"engine": self.name, "gen_ai.request.model": self.model_name,
                          "gen_ai.usage.input_tokens": n_real}
        return self._run(ids, positions, num_chunks, continue_cache=False, return_queries=return_queries,
                         on_chunk=on_chunk, t0=time.perf_counter() if t0 is None else t0, bind_attrs=bind_attrs,
                         host_logits=host_logits, on_last_dispatch=on_last_dispatch)

    def prefill_from_ids(self, ids, positions, *, continue_cache: bool = False, window: str | None = None,
                         return_queries: bool = False, on_chunk=None, host_logits: bool = True,
                         on_last_dispatch=None, queued: QueuedPrefill | None = None) -> PrefillResult:
        """Prefill token ``ids`` with explicit ``positions`` (sorted, possibly gapped: a pruned prompt).

        Starts from an empty cache unless ``continue_cache``. Chunking is as in :meth:`prefill`
        (padded to a multiple of ``prefill_seq_len`` with position -1). Each token attends to the
        cached tokens whose position is <= its own. Without a window, the GenAI attributes go
        on the ``bind`` span. ``host_logits=False``: the last token's logits stay on the device
        (``last_logits``; ``logits`` is None), for a caller that only decodes from them.
        ``on_last_dispatch(logits, next_position)``: called once the last chunk is dispatched,
        before the host waits for it, with its device logits ``[B, V]``; it may queue the program
        that continues the cache (:meth:`queue_decode`), which then owns the cache.
        ``queued``: what :meth:`queue_prefill` dispatched for exactly these tokens; the spans then
        wait for it instead of placing and running the chunk (no copy in ``bind``).
        """
        t0 = time.perf_counter()
        ids = np.asarray(ids)
        positions = np.asarray(positions)
        self._check_ids(ids, positions)
        self._check_fits(len(ids), continue_cache=continue_cache)
        if continue_cache and self.cache is not None and self._cache_len and positions[0] < self._next_position:
            # Attention takes "earlier slot" for "earlier position" (engines.attention.chunk_causal).
            raise ValueError(f"continuing the cache at position {int(positions[0])}: the cache already holds "
                             f"positions up to {self._next_position - 1}; a continued prompt's positions must "
                             "come after them")
        T = self.prefill_seq_len
        num_chunks = -(len(ids) // -T)
        if queued is not None:
            self._check_queued(queued, len(ids), continue_cache, return_queries, on_last_dispatch)
        pad = num_chunks * T - len(ids)
        ids_p = np.concatenate([ids.astype(np.int32), np.full(pad, self._pad_id, np.int32)])
        pos_p = np.concatenate([positions.astype(np.int32), np.full(pad, -1, np.int32)])
        attrs = {"engine": self.name, "gen_ai.request.model": self.model_name,
                 "gen_ai.usage.input_tokens": len(ids)}
        with tracer.window(window, **attrs) if window else contextlib.nullcontext():
            return self._run(ids_p, pos_p, num_chunks, continue_cache=continue_cache,
                             return_queries=return_queries, on_chunk=on_chunk, t0=t0,
                             bind_attrs=None if window else attrs, host_logits=host_logits,
                             on_last_dispatch=on_last_dispatch, queued=queued)

    def queue_prefill(self, inputs) -> QueuedPrefill:
        """Dispatch a fresh one-chunk prefill whose inputs are already on this engine's device and
        return without waiting; :meth:`prefill_from_ids` (``queued=``) later waits for it in its spans.

        ``inputs``: ``[2, 1, R]`` int32 device array, the tokens and their positions (real tokens
        first, then padding at position -1), ``R <= prefill_seq_len``. For
        inputs computed on the device (the speculative engine's kept tokens, gathered behind its
        scoring): the chunk is queued behind the program that makes them, so the device goes
        from one to the other without waiting for the host to read, place and dispatch.
        """
        R = int(inputs.shape[2])
        if not self.can_queue(R):
            raise ValueError(f"queue_prefill: {R} rows do not fit one chunk of prefill_seq_len="
                             f"{self.prefill_seq_len} and {self.cache_slots} cache slots, or the engine has no "
                             "cache yet or prefills token by token")
        logits, self.cache, _ = self.chunk_fn()(self.params, self.cache, inputs, fresh=True)
        prefetch(logits)
        self._serial += 1  # the cache no longer holds any earlier prefill
        self._cache_len = 0
        return QueuedPrefill(logits=logits, rows=R, serial=self._serial)

    def can_queue(self, rows: int) -> bool:
        """Whether :meth:`queue_prefill` takes a chunk of ``rows`` rows: one chunk that fits the
        cache, an engine with a cache already, prefilling by chunks (not token by token)."""
        return (self.cache is not None and self.options.prefill != "python"
                and 0 < rows <= min(self.prefill_seq_len, self.cache_slots))

    def _check_queued(self, queued: QueuedPrefill, n_ids: int, continue_cache, return_queries, on_last_dispatch):
        if queued.serial != self._serial:
            raise RuntimeError("the queued prefill is stale: the cache ran another program since queue_prefill")
        if continue_cache or return_queries or on_last_dispatch is not None or not 0 < n_ids <= queued.rows:
            raise ValueError(f"queued: {n_ids} tokens do not match the queued chunk of {queued.rows} rows "
                             "(a queued prefill is fresh, one chunk, without queries or on_last_dispatch)")

    def _run(self, ids, positions, num_chunks, *, continue_cache, return_queries, on_chunk, t0, bind_attrs,
             host_logits=True, on_last_dispatch=None, queued=None):
        logits_h = None  # [V] float32 on the host, when host_logits
        T = self.prefill_seq_len
        python = self.options.prefill == "python"
        real = positions >= 0                                                # [C*T] not padding
        real_per_chunk = real.reshape(num_chunks, T).sum(axis=1)
        lengths = self._chunk_lengths(int(real_per_chunk[-1]), num_chunks)   # rows each chunk computes
        if queued is not None:  # its inputs were made on the device: nothing to place
            lengths, marks = [queued.rows], {"queued": True}
        else:
            marks = {}
        with tracer.span("bind", **(bind_attrs or {"engine": self.name}), **self._group, **marks):
            if self.cache is None:
                # reset_cache once now: its compilation belongs to the first prefill, not a later one.
                self.cache = reset_cache(allocate_cache(self.config, batch=1, slots=self.cache_slots,
                                                        dtype=self.dtype,
                                                        device=self.device if self.mesh is None else self.mesh))
                self._cache_len = 0
            elif not continue_cache:
                if python:  # the chunked path's first chunk empties the cache itself (fresh=True)
                    self.cache = reset_cache(self.cache)  # same buffers, emptied (engines.cache)
                self._cache_len = 0
            start = self._cache_len
            if not python and start + sum(lengths) > self.cache_slots:
                raise ValueError(f"continuing the cache at slot {start} with {num_chunks} chunk(s) of "
                                 f"prefill_seq_len={T} needs {start + sum(lengths)} slots; ctx_len={self.ctx_len} "
                                 f"gives {self.cache_slots}: raise ctx_len")
            placed = None
            if queued is None:
                # One [2, 1, n] array per chunk (tokens; positions): one copy each (the last real
                # row is counted on the device). Python: one [2, 1, 1] array per real token, fed one by one.
                pairs = np.stack([ids, positions])                              # [2, C*T]
                if python:
                    host = [pairs[:, j].reshape(2, 1, 1) for j in np.flatnonzero(real)]
                else:
                    host = [pairs[:, i * T: i * T + n].reshape(2, 1, n) for i, n in enumerate(lengths)]
                placed = _h2d(self.device, host, dst=self.where)
        fn = self.chunk_fn(return_queries=return_queries)
        queries = logits = None
        n_tok = int(sum(real_per_chunk))
        # Positions increase (checked), and a continued cache only grows them (checked): the
        # last real position is the largest the cache holds.
        next_position = int(positions[real][-1]) + 1
        done = 0
        for i in range(num_chunks):
            n_real = int(real_per_chunk[i])
            with tracer.span("prefill.chunk", engine=self.name, **{"chunk.index": i, "chunk.tokens": n_real},
                             **self._group, **marks):
                if queued is not None:  # dispatched before this span: it waits for the device
                    logits, queries = queued.logits, None
                elif python:
                    for j in range(done, done + n_real):
                        logits, self.cache, queries = fn(self.params, self.cache, placed[j])
                    done += n_real
                elif self.fixed is not None:  # inputs and outputs at the chunk's kept addresses
                    placed[i], (logits, self.cache, queries) = self.fixed.call(
                        fn, self.chunk_fn(return_queries=return_queries, into=True), self.params, self.cache,
                        placed[i], index=i, fresh=not continue_cache and i == 0, queries=return_queries)
                else:  # the first chunk into an empty cache has no prefix to attend to
                    logits, self.cache, queries = fn(self.params, self.cache, placed[i],
                                                     fresh=not continue_cache and i == 0)
                last = i == num_chunks - 1
                if last and host_logits:
                    prefetch(logits)
                if last and on_last_dispatch is not None:
                    self._cache_len = start + n_tok  # what queue_decode checks its steps against
                    on_last_dispatch(logits, next_position)  # may donate the cache: wait on logits
                    jax.block_until_ready(logits)  # one program: its logits are ready when its cache is
                else:
                    jax.block_until_ready((logits, self.cache))
                if on_chunk is not None:
                    on_chunk(i, None if queries is None else queries[:, 0])
                if last and host_logits:
                    logits_h = to_host(logits, "logits", self.where)[0].astype(np.float32)  # [V]
        self._serial += 1
        self._cache_len = start + n_tok
        self._next_position = next_position
        return PrefillResult(
            logits=logits_h, prompt_tokens=n_tok, padded_len=sum(lengths),
            num_chunks=num_chunks, next_position=next_position, cache_len=self._cache_len,
            token_ids=ids[real].copy(), positions=positions[real].copy(), elapsed_s=time.perf_counter() - t0,
            queries=None if queries is None else queries[:, 0], last_logits=logits, serial=self._serial,
            device_inputs=None if python or queued else tuple(placed))

    # ---- inspection --------------------------------------------------------------------------
    def cache_keys(self, n: int | None = None):
        """Post-RoPE keys of the first ``n`` cache slots (default: every filled slot), ``[L, n, K, H]``.

        After a fresh prefill these are the prompt's real tokens in order (padding slots are past
        them). Stays on the device; the caller records any copy (category ``past_key``).
        """
        if self.cache is None:
            raise RuntimeError("no KV cache yet: run prefill first")
        n = self._cache_len if n is None else int(n)
        return self.cache.stacked_keys(n)

    def forward_logits(self, ids, positions=None, key_mask=None) -> np.ndarray:
        """Logits [P, V] float32 of a full forward without the cache (the reference for tests).

        ``key_mask`` [P] bool: tokens marked False are invisible as keys in every layer (a
        pruned prompt's reference: the full prompt with the dropped tokens masked out).
        """
        ids = np.asarray(ids, np.int32)
        positions = np.arange(len(ids), dtype=np.int32) if positions is None else np.asarray(positions, np.int32)
        mask = None if key_mask is None else jnp.asarray(np.asarray(key_mask, bool)[None])
        out = model.forward_jit(self.params, jnp.asarray(ids[None]), jnp.asarray(positions[None]),
                                cfg=self.config, opts=self.options, key_mask=mask)
        return np.asarray(out)[0]

    # ---- checks ------------------------------------------------------------------------------
    def _check_ids(self, ids, positions) -> None:
        if ids.ndim != 1 or positions.ndim != 1 or len(ids) != len(positions):
            raise ValueError(f"ids and positions must be 1-D of one length, got shapes {ids.shape} and {positions.shape}")
        if len(ids) == 0:
            raise ValueError("ids is empty; give at least one token")
        if not (np.issubdtype(ids.dtype, np.integer) and np.issubdtype(positions.dtype, np.integer)):
            raise ValueError(f"ids and positions must be integers, got {ids.dtype} and {positions.dtype}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, vocab_size={self.config.vocab_size}), got "
                             f"[{ids.min()}, {ids.max()}]")
        if positions.min() < 0 or np.any(np.diff(positions) <= 0):
            raise ValueError("positions must be non-negative and strictly increasing (a pruned prompt keeps "
                             "its tokens in order)")

    def _chunk_lengths(self, last_real: int, num_chunks: int, multiple: int = FIT_MULTIPLE) -> list[int]:
        """Rows per chunk: ``prefill_seq_len`` each; the last one fitted to its real tokens
        (rounded up to ``multiple``, default ``FIT_MULTIPLE``) unless ``last_chunk="full"``."""
        T = self.prefill_seq_len
        last = T if self.options.last_chunk == "full" else min(T, -(last_real // -multiple) * multiple)
        return [T] * (num_chunks - 1) + [last]

    def _check_fits(self, n_tokens: int, *, continue_cache: bool) -> None:
        held = self._cache_len if continue_cache and self.cache is not None else 0
        if held + n_tokens > self.ctx_len:
            what = f"prompt has {n_tokens} tokens" + (f" on top of {held} cached" if held else "")
            raise ValueError(f"{what}, more than ctx_len={self.ctx_len}; raise ctx_len or shorten the prompt")
