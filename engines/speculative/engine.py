"""Speculative prefill: a small draft model picks the prompt tokens the base model has to see.

Seed 000's system, rebuilt so the trace shows where its time goes. ``scoring="host"`` is
QEfficient's design, kept faithfully because its cost is the subject: the draft's chunk loop
copies the FP32 ``prefill_queries`` ``[L, N, H]`` to the host after *every* chunk, the retained
``past_key`` cache after the final one, and numpy scores on the host. ``scoring="device"`` is
the fix: queries and keys stay where they are and only the kept indices come back.

Both modes avoid QEfficient's two defects (DESIGN.md): the anchor is the query of the last
*real* prompt token (not the last slot of a right-padded chunk), and the base model prefills the
kept tokens with their original position ids into an *empty* cache, so dropped tokens are never
visible; decoding then continues at the original prompt length.

One :meth:`SpecPrefillEngine.run` is five tracer windows, and every TTFT field is a window's (or
a ``score.*`` child's) duration from the same ``perf_counter_ns`` readings the span holds::

    ttft.baseline      full base prefill, side by side (optional)
    ttft.spec_device   draft: tokenize, bind, prefill.chunk x num_chunks (engine=spec), look-ahead
    ttft.host_scoring  score.assemble, score.compute, score.select
    ttft.base_pruned   base: bind, prefill.chunk x num_chunks_pruned (engine=base)
    decode             base: greedy decode from the original prompt length
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter_ns

import jax
import numpy as np

from spectrace import tracer
from spectrace.engines.speculative import handover
from spectrace.engines.speculative import scoring as score
from spectrace.engines.base import BaseEngine, prefetch, to_host
from spectrace.engines.tokenizer import check_same_tokenizer
from spectrace.tracer.ttft import TTFT_FIELDS

SCORING_MODES: tuple[str, ...] = ("host", "device")
# Window name -> pass key of ttft.json (docs/CONTRACTS.md).
PASSES = {"ttft.spec_device": "spec", "ttft.host_scoring": "host_scoring", "ttft.base_pruned": "base_pruned",
          "ttft.baseline": "baseline"}


@dataclass
class SpecResult:
    """One speculative-prefill request. TTFT fields carry DESIGN.md's (QEfficient's) names.

    ``ttft_host_scoring_s`` is the ``ttft.host_scoring`` window, so the three windows sum to
    ``ttft_speculative_s`` exactly; ``t_assemble_s + t_score_s + t_select_s`` is that window
    less a few microseconds of span bookkeeping. ``ttft_baseline_s`` is None without a baseline.
    """

    ttft_spec_device_s: float
    t_assemble_s: float
    t_score_s: float
    t_select_s: float
    ttft_host_scoring_s: float
    ttft_spec_only_s: float
    ttft_base_pruned_only_s: float
    ttft_speculative_s: float
    ttft_baseline_s: float | None
    prompt_tokens: int
    padded_len: int
    num_chunks: int
    kept_tokens: int
    padded_len_pruned: int
    num_chunks_pruned: int
    kept_indices: np.ndarray                  # [kept_tokens] int32, sorted, original positions
    tokens: np.ndarray                        # [gen_len] int32, the base model's greedy continuation
    logits: np.ndarray                        # [V] float32, base logits after the pruned prefill
    baseline_logits: np.ndarray | None        # [V] float32, base logits after the full prefill
    scoring: str = "host"
    anchors: int = 1                          # A: 1 + look-ahead steps actually used
    anchor_queries: object = field(default=None, repr=False)  # [A, L', N, H] numpy (host); [A, L, N, H] jax
    io: dict = field(default_factory=dict)    # pass -> category -> {bytes, ms, count, direction}
    chunks: dict = field(default_factory=dict)  # pass -> [{index, tokens, ms, io}]

    def ttft(self) -> dict:
        """The TTFT fields as a dict (ttft.json's per-run record)."""
        return {name: getattr(self, name) for name in TTFT_FIELDS}


class _Timed:
    """A tracer window or span whose duration is known even while recording is off.

    Recording on: the span's own ``start_ns``/``end_ns``. Off: two ``perf_counter_ns`` reads
    around the same block (the disabled span is the shared no-op).
    """

    __slots__ = ("_cm", "span", "ns", "_t0")

    def __init__(self, opener, name, **attributes):
        self._cm = opener(name, **attributes)
        self.span = None
        self.ns = 0

    def __enter__(self):
        self.span = self._cm.__enter__()
        self._t0 = perf_counter_ns()
        return self

    def __exit__(self, *exc):
        t1 = perf_counter_ns()
        self._cm.__exit__(*exc)
        self.ns = self.span.duration_ns if self.span else t1 - self._t0
        return False

    @property
    def s(self) -> float:
        return self.ns / 1e9


class SpecPrefillEngine:
    """A draft :class:`BaseEngine` (chunk spans ``engine="spec"``) in front of a base one.

    Each engine keeps its own device; scoring options are fixed per engine (one compilation).
    """

    def __init__(self, draft: BaseEngine, base: BaseEngine, *, keep: float = 0.10, chunk_size: int = 32,
                 pool_kernel: int = 13, look_ahead: int = 8, scoring: str = "host", layers: str = "all"):
        _validate(keep=keep, chunk_size=chunk_size, pool_kernel=pool_kernel, look_ahead=look_ahead,
                  scoring=scoring, layers=layers)
        if draft.prefill_seq_len != base.prefill_seq_len:
            raise ValueError(f"prefill_seq_len differs: draft {draft.prefill_seq_len}, base {base.prefill_seq_len}; "
                             "spec and base must chunk a prompt the same way")
        check_same_tokenizer(draft.tokenizer, base.tokenizer)
        self.draft, self.base = draft, base
        self.keep, self.chunk_size, self.pool_kernel = float(keep), int(chunk_size), int(pool_kernel)
        self.look_ahead, self.scoring, self.layers = int(look_ahead), scoring, layers
        # The draft's layers that score, and their sliding windows (Gemma: each sliding layer
        # scores only the keys its anchors can see; Llama has none). docs/gemma.md says why
        # "all" stays the default for a Gemma draft.
        self._windows = draft.config.layer_windows
        self._layers = score.layer_indices(draft.config.n_layers, layers, self._windows)
        self._pick = score.layer_pick(self._layers)                                 # slice or index array

    @classmethod
    def from_pretrained(cls, draft, *, base, prefill_seq_len: int, ctx_len: int, keep: float = 0.10,
                        chunk_size: int = 32, pool_kernel: int = 13, look_ahead: int = 8, scoring: str = "host",
                        layers: str = "all", dtype=None, draft_devices=None, base_devices=None,
                        **engine_kwargs) -> SpecPrefillEngine:
        """Load the draft (path, preset or :class:`BaseEngine`) and the base (likewise).

        Options are checked before anything loads. ``engine_kwargs`` (``options``, ``seed``,
        ``cache_dir``, switches) go to both :meth:`BaseEngine.from_pretrained` calls.
        """
        _validate(keep=keep, chunk_size=chunk_size, pool_kernel=pool_kernel, look_ahead=look_ahead,
                  scoring=scoring, layers=layers)

        def load(src, name, devices):
            if isinstance(src, BaseEngine):
                return src
            return BaseEngine.from_pretrained(src, prefill_seq_len=prefill_seq_len, ctx_len=ctx_len, dtype=dtype,
                                              devices=devices, name=name, **engine_kwargs)

        return cls(load(draft, "spec", draft_devices), load(base, "base", base_devices), keep=keep,
                   chunk_size=chunk_size, pool_kernel=pool_kernel, look_ahead=look_ahead, scoring=scoring,
                   layers=layers)

    # ---- one request -------------------------------------------------------------------------
    def run(self, prompt: str, *, gen_len: int = 16, baseline: bool = True) -> SpecResult:
        """Baseline (optional), draft prefill + look-ahead, scoring, pruned base prefill, decode."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty str, got {prompt!r:.40}")
        if not isinstance(gen_len, (int, np.integer)) or isinstance(gen_len, bool) or gen_len < 0:
            raise ValueError(f"gen_len must be an int >= 0, got {gen_len!r}")
        base, model = self.base, {"gen_ai.request.model": self.base.model_name}
        # One request, one root span (GenAI semconv's "{operation} {model}"): the windows under
        # it share one trace, one sampling decision, and the caller's trace context as parent.
        request = {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "spectrace", **model}
        with tracer.span(f"text_completion {base.model_name}", **request) as root:
            result, decode_s = self._run(prompt, gen_len, baseline, model)
            root.set("gen_ai.usage.input_tokens", result.prompt_tokens)
            root.set("gen_ai.usage.output_tokens", len(result.tokens))
        ttft = {"speculative": result.ttft_speculative_s}
        if result.ttft_baseline_s is not None:
            ttft["baseline"] = result.ttft_baseline_s
        windows_s = {"ttft.spec_device": result.ttft_spec_device_s, "ttft.host_scoring": result.ttft_host_scoring_s,
                     "ttft.base_pruned": result.ttft_base_pruned_only_s, "ttft.baseline": result.ttft_baseline_s}
        steps = max(len(result.tokens) - 1, 0)
        if steps:
            windows_s["decode"] = decode_s
        tracer.record_request(model=base.model_name, ttft_s=ttft, windows_s=windows_s,
                              input_tokens=result.prompt_tokens, output_tokens=len(result.tokens),
                              time_per_output_token_s=decode_s / steps if steps else None,
                              kept_ratio=result.kept_tokens / result.prompt_tokens if result.prompt_tokens else None)
        return result

    def _run(self, prompt: str, gen_len: int, baseline: bool, model: dict) -> tuple[SpecResult, float]:
        base = self.base
        windows: dict[str, _Timed] = {}
        baseline_logits = None
        if baseline:
            with _Timed(tracer.window, "ttft.baseline", engine="base", **model) as w:
                full = base.prefill(prompt, window=None)
                w.span.set("gen_ai.usage.input_tokens", full.prompt_tokens)
            windows["ttft.baseline"], baseline_logits = w, full.logits

        with _Timed(tracer.window, "ttft.spec_device", engine="spec", scoring=self.scoring,
                    **{"gen_ai.request.model": self.draft.model_name}) as w:
            drafted = self._draft_pass(prompt)
            w.span.set("gen_ai.usage.input_tokens", drafted.prefill.prompt_tokens)
        windows["ttft.spec_device"] = w
        pre = drafted.prefill

        with _Timed(tracer.window, "ttft.host_scoring", engine="spec", scoring=self.scoring) as w:
            kept, parts = self._score(drafted)
            w.span.set("kept_tokens", len(kept))
        windows["ttft.host_scoring"] = w

        with _Timed(tracer.window, "ttft.base_pruned", engine="base", **model) as w:
            w.span.set("gen_ai.usage.input_tokens", len(kept))
            # Original positions, empty cache: the dropped tokens are nowhere to be seen.
            pruned = base.prefill_from_ids(pre.token_ids[kept], pre.positions[kept], window=None,
                                           queued=drafted.pruned)
        windows["ttft.base_pruned"] = w

        tokens, decode_s = np.zeros(0, np.int32), 0.0
        if gen_len:  # continues at pruned.next_position, the original prompt length
            gen = base.decode(pruned, int(gen_len), window="decode")
            tokens, decode_s = gen.tokens, gen.decode_s

        spec_s, scoring_s, pruned_s = (windows[n].s for n in ("ttft.spec_device", "ttft.host_scoring",
                                                             "ttft.base_pruned"))
        return SpecResult(
            ttft_spec_device_s=spec_s, t_assemble_s=parts[0].s, t_score_s=parts[1].s, t_select_s=parts[2].s,
            ttft_host_scoring_s=scoring_s, ttft_spec_only_s=spec_s + scoring_s, ttft_base_pruned_only_s=pruned_s,
            ttft_speculative_s=spec_s + scoring_s + pruned_s,
            ttft_baseline_s=windows["ttft.baseline"].s if baseline else None,
            prompt_tokens=pre.prompt_tokens, padded_len=pre.padded_len, num_chunks=pre.num_chunks,
            kept_tokens=len(kept), padded_len_pruned=pruned.padded_len, num_chunks_pruned=pruned.num_chunks,
            kept_indices=kept, tokens=tokens, logits=pruned.logits, baseline_logits=baseline_logits,
            scoring=self.scoring, anchors=drafted.n_anchors, anchor_queries=_anchors(drafted),
            io={PASSES[n]: _io_of(t.span) for n, t in windows.items()},
            chunks={PASSES[n]: _chunks_of(t.span) for n, t in windows.items()}), decode_s

    # ---- draft -------------------------------------------------------------------------------
    def _draft_pass(self, prompt: str) -> _Drafted:
        """Tokenize, prefill the draft (queries per chunk), run the look-ahead steps.

        Host mode copies what QEfficient's bindings copy, each recorded under its category inside
        the chunk that moves it: ``prefill_queries`` every chunk, ``past_key.<l>_RetainedState``
        per layer on the final chunk (the whole retained buffer, as the binding returns it).
        """
        d, host, sl = self.draft, self.scoring == "host", self._pick
        ids, positions, num_chunks = d.tokenize(prompt)
        real = positions >= 0
        out = _Drafted()

        def on_chunk(i, q):                                                        # q [L, N, H] f32
            if not host:
                return
            q = q if len(self._layers) == d.config.n_layers else q[sl]            # [L', N, H]
            out.queries = to_host(q, "prefill_queries", d.where)                   # the final chunk's wins
            if i == num_chunks - 1:
                for l in self._layers:                                             # L' x [S, K, H]
                    out.keys.append(to_host(d.cache.k[l][0], f"past_key.{l}_RetainedState", d.where))

        # The draft's logits feed only the look-ahead, on the device: host mode copies them as
        # QEfficient's session returns them; device mode leaves them where they are.
        steps = min(self.look_ahead - 1, d.ctx_len - int(real.sum()))
        # Device mode: the look-ahead's last step feeds its token for its queries only (no LM
        # head, no last-layer attention or MLP): nobody reads the token after it. Host mode
        # keeps QEfficient's whole steps.
        last_token = host
        early = {}

        def queue_lookahead(logits, next_position):
            # Device mode: the look-ahead loop is dispatched while the last chunk still runs, so
            # the device goes from one to the other without waiting for the host.
            early["lookahead"] = d.queue_decode(logits, next_position, steps, return_queries=True,
                                                last_token=last_token)

        out.prefill = pre = d.prefill_tokenized(ids, positions, num_chunks, return_queries=True, on_chunk=on_chunk,
                                                host_logits=host,
                                                on_last_dispatch=queue_lookahead if self._queue_ahead(steps) else None)
        lookahead = None                                                           # [A-1, L, N, H]

        rows = self._handover_rows(pre)

        def queue_scoring(queries):                                                # [A-1, L, N, H]
            # Device mode: scoring is queued behind the look-ahead before the host waits for its
            # tokens (no device idle between them), and the pruned base chunk behind scoring
            # (engines.speculative.handover); both redone below if an EOS cuts the anchors.
            early["scored"] = self._score_device((pre.queries, queries), pre.prompt_tokens)
            if rows is not None:
                early["pruned"] = handover.queue_pruned(self.base, pre.device_inputs, early["scored"][0], rows)

        if steps > 0:
            gen = d.decode(pre, steps + 1, return_queries=True, window=None, span_name="lookahead",
                           on_dispatch=None if host else queue_scoring, queued=early.get("lookahead"),
                           last_token=last_token)
            # Anchors stop at the first fed EOS: a query past the end of the answer says nothing.
            fed = gen.tokens[:steps]
            stop = np.flatnonzero(fed == d.config.eos_token_id)
            n_la = int(stop[0]) if len(stop) else steps
            if n_la:
                lookahead = gen.queries if n_la == steps else gen.queries[:n_la]   # [A-1, L, N, H]
                if host:
                    lookahead = to_host(lookahead[:, sl], "prefill_queries", d.where)  # [A-1, L', N, H]
            if n_la == steps:
                out.scored, out.pruned = early.get("scored"), early.get("pruned")
        out.n_anchors = 1 + (0 if lookahead is None else lookahead.shape[0])
        out.lookahead = lookahead
        return out

    def _queue_ahead(self, steps: int) -> bool:
        """Queue the look-ahead behind the draft's last chunk: device mode with the compiled loop
        (host mode is QEfficient's, waits included; seed 003's Python loop syncs every token)."""
        return self.scoring == "device" and steps > 0 and self.draft.options.decode != "python"

    def _handover_rows(self, pre) -> int | None:
        """The pruned base chunk's rows when it can be queued behind device scoring, else None."""
        if self.scoring != "device" or pre.device_inputs is None or not handover.same_device(self.draft, self.base):
            return None
        return handover.pruned_rows(self.base, pre.prompt_tokens, chunk_size=self.chunk_size, keep=self.keep)

    def _score_device(self, parts: tuple, n_real: int) -> tuple:
        """Queue device scoring of anchor query ``parts`` (``_Drafted.device_parts``); returns
        ``(indices, count)`` device arrays whose copy to the host is already queued."""
        n_anchors = sum(1 if q.ndim == 3 else q.shape[0] for q in parts)
        apos = np.arange(n_real - 1, n_real - 1 + n_anchors, dtype=np.int32)      # [A]
        windows = score.windows_of(self._windows, self._layers)
        idx, count = score.score_device(
            parts, self.draft.cache.k, n_real, keep=self.keep, chunk_size=self.chunk_size,
            pool_kernel=self.pool_kernel, layers=self._layers, key_layout="LBSKH",
            windows=self._windows if windows else None, anchor_positions=apos)
        prefetch(idx, count)
        return idx, count

    # ---- scoring -----------------------------------------------------------------------------
    def _score(self, drafted: _Drafted):
        """Kept indices and the (assemble, compute, select) timers, in the current window."""
        opts = dict(keep=self.keep, chunk_size=self.chunk_size)
        n_real = drafted.prefill.prompt_tokens
        # Anchors: the last prompt token, then the look-ahead tokens fed after it.
        apos = np.arange(n_real - 1, n_real - 1 + drafted.n_anchors, dtype=np.int32)
        windows = score.windows_of(self._windows, self._layers)
        with _Timed(tracer.span, "score.assemble") as t_asm:
            if self.scoring == "host":
                anchors = [drafted.queries] + ([] if drafted.lookahead is None else list(drafted.lookahead))
                q, k = score.assemble(anchors, drafted.keys, n_real, key_layout="LSKH")
                drafted.anchors = q
            else:  # nothing to do on the host: score_device joins the parts in its own program
                q = drafted.device_parts()
        with _Timed(tracer.span, "score.compute") as t_cmp:
            if self.scoring == "host":
                token_scores = score.compute(q, k, pool_kernel=self.pool_kernel, windows=windows,
                                             anchor_positions=apos)              # [S]
            else:
                # The cache as stored (L x [B, S_cache, K, H]); layers are picked inside the jit.
                # Usually queued already, behind the look-ahead (_draft_pass): this waits for it.
                idx, count = drafted.scored or self._score_device(q, n_real)
                jax.block_until_ready((idx, count))
        with _Timed(tracer.span, "score.select") as t_sel:
            if self.scoring == "host":
                kept = score.select(token_scores, **opts)
            else:
                with tracer.transfer("other", "d2h", idx.nbytes + count.nbytes, src=self.draft.where):
                    idx_h, n = jax.device_get((idx, count))
                kept = np.asarray(idx_h[: int(n)], np.int32)
        return kept, (t_asm, t_cmp, t_sel)


@dataclass
class _Drafted:
    """What the draft pass leaves for scoring."""

    prefill: object = None                    # PrefillResult of the draft
    queries: np.ndarray | None = None         # host mode: final chunk's [L', N, H] (last real token)
    keys: list = field(default_factory=list)  # host mode: L' x [S_cache, K, H], model dtype
    lookahead: object = None                  # [A-1, L', N, H] numpy (host), [A-1, L, N, H] jax (device)
    n_anchors: int = 1
    anchors: object = None                    # host mode: what scoring got, [A, L', N, H]; device: None
    scored: tuple | None = None               # device mode: (indices, count) queued behind the look-ahead
    pruned: object = None                     # device mode: the base's QueuedPrefill behind scoring, or None

    def device_parts(self) -> tuple:
        """Device mode's anchor queries as ``score_device`` takes them: ([L, N, H], [A-1, L, N, H]?)."""
        return (self.prefill.queries,) + (() if self.lookahead is None else (self.lookahead,))


def _anchors(drafted: _Drafted):
    """What scoring got as anchors: host mode's array, or device mode's parts joined (after TTFT)."""
    if drafted.anchors is not None:
        return drafted.anchors
    return score.join_anchors(drafted.device_parts())                             # [A, L, N, H]


def _validate(*, keep, chunk_size, pool_kernel, look_ahead, scoring, layers) -> None:
    score.validate(keep=keep, chunk_size=chunk_size, pool_kernel=pool_kernel, layers=layers)
    if not isinstance(look_ahead, (int, np.integer)) or isinstance(look_ahead, bool) or look_ahead < 1:
        raise ValueError(f"look_ahead must be an int >= 1 (1 = the prompt's last token only), got {look_ahead!r}")
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring must be one of {SCORING_MODES}, got {scoring!r}")


def _io_of(span) -> dict:
    if not span:
        return {}
    return {cat: tot.as_dict() for cat, tot in span.io.items()}


def _chunks_of(span) -> list:
    data = getattr(span, "window_data", None) if span else None
    if data is None:
        return []
    return [{"index": c.attributes.get("chunk.index", i), "tokens": c.attributes.get("chunk.tokens"),
             "ms": c.duration_ns / 1e6, "io": {cat: {"bytes": t.bytes, "ms": t.ms} for cat, t in c.io.items()}}
            for i, c in enumerate(data.chunks)]
