"""Greedy decode continuing a prefill's KV cache: one compiled ``lax.scan`` (or seed 003's loop).

A mixin of :class:`~spectrace.engines.base.BaseEngine` (its own module: the base engine's prefill
and cache bookkeeping are a module's worth already). Tokens come back to the host once; the
speculative engine's look-ahead is this with ``return_queries=True`` inside its draft window.
"""

from __future__ import annotations

import time
from functools import partial

import jax.numpy as jnp
import numpy as np

from spectrace.engines import model
from spectrace.engines.host import _h2d, _window_or_span, prefetch, to_host
from spectrace.engines.results import GenerateResult, PrefillResult


class DecodeMixin:
    """``decode`` and ``generate`` over the engine's ``params``, ``cache`` and serial bookkeeping."""

    def decode(self, prefill: PrefillResult, max_new_tokens: int, *, return_queries: bool = False,
               window: str | None = "decode", span_name: str = "decode", on_dispatch=None,
               queued: tuple | None = None, last_token: bool = True) -> GenerateResult:
        """Greedy decode continuing the cache of ``prefill`` (which must be this engine's latest).

        Generates ``max_new_tokens`` tokens (the first is the prefill logits' argmax, so
        ``max_new_tokens - 1`` forward steps), starting at ``prefill.next_position``.
        ``window``: the tracer window to open; None opens a plain span ``span_name`` instead
        (e.g. the speculative engine's look-ahead inside its own window). ``on_dispatch(queries)``
        (with ``return_queries``, the compiled loop): called with the ``[G-1, L, N, H]`` queries
        while the device still runs the loop, before the host waits for its tokens, so the
        caller can queue the program that reads them (the speculative engine's scoring).
        ``queued``: what :meth:`queue_decode` returned for these steps while the prefill's last
        chunk still ran; the span then times the wait for its tokens. ``last_token=False`` (with
        ``return_queries``): the last step only feeds its token, for its queries
        (``model.decode_scan``: no LM head; seed 003's Python loop computes the whole step and
        drops the token); ``tokens`` then holds the ``max_new_tokens - 1`` fed tokens.
        """
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int")
        steps = int(max_new_tokens) - 1
        _check_last_token(last_token, return_queries, "max_new_tokens", max_new_tokens, 2)
        if queued is not None and queued[2:] != (steps, last_token):
            raise ValueError(f"max_new_tokens={max_new_tokens}, last_token={last_token}: the queued loop has "
                             f"{queued[2]} steps, last_token={queued[3]}")
        if queued is None and (prefill.serial != self._serial or self.cache is None):
            raise RuntimeError("the KV cache no longer holds this prefill (another prefill or decode ran "
                               "since); decode right after the prefill it continues")
        if queued is None:
            self._check_steps(steps)
        attrs = {"engine": self.name, "gen_ai.request.model": self.model_name, **self._group}
        queries = None
        with _window_or_span(window, span_name, **attrs) as span:
            t0 = time.perf_counter()
            if steps and self.options.decode == "python" and queued is None:
                (position,) = _h2d(self.device, [np.full((1,), prefill.next_position, np.int32)], wait=False,
                                   dst=self.where)
                host, queries = self._decode_python(model.greedy(prefill.last_logits), position, steps,
                                                    return_queries)
                queries = None if queries is None else queries[:, :, 0]                # [G-1, L, N, H]
                host = host if last_token else host[:-1]
            else:
                tokens, queries, *_ = queued or self.queue_decode(prefill.last_logits, prefill.next_position, steps,
                                                                 return_queries=return_queries, last_token=last_token)
                if on_dispatch is not None and queries is not None:
                    on_dispatch(queries)
                host = to_host(tokens, src=self.where)[:, 0]
            elapsed = time.perf_counter() - t0
            span.set("gen_ai.usage.output_tokens", len(host))
            span.set("decode.tokens_per_s", len(host) / elapsed if elapsed > 0 else 0.0)
        self._serial += 1
        self._cache_len += steps
        self._next_position = prefill.next_position + steps
        return GenerateResult(tokens=host.astype(np.int32), prefill=prefill, decode_s=elapsed, queries=queries,
                              last_token=last_token)

    def queue_decode(self, last_logits, next_position: int, steps: int, *, return_queries: bool = False,
                     last_token: bool = True) -> tuple:
        """Dispatch the compiled greedy loop of ``steps`` steps and return without waiting:
        ``(tokens [G, B], queries [G-1, L, N, H] or None, steps, last_token)``, the tokens' copy to
        the host queued behind it (``last_token=False``: tokens [G-1, B], see :meth:`decode`). The
        cache becomes the loop's output.

        :meth:`decode` calls it; a caller may call it earlier, from a prefill's
        ``on_last_dispatch`` while the last chunk still runs (the speculative engine's
        look-ahead), so the host's dispatch work overlaps the chunk instead of following it, and
        pass the result to :meth:`decode` as ``queued``.
        """
        self._check_steps(steps)
        _check_last_token(last_token, return_queries, "steps", steps, 1)
        (position,) = _h2d(self.device, [np.full((1,), next_position, np.int32)], wait=False, dst=self.where)
        queries = None
        if steps:  # the first token is the prefill's argmax, taken inside the same program
            tokens, self.cache, queries = model.decode_jit(self.decode_xla)(                 # [G, B]
                self.params, self.cache, last_logits, position, cfg=self.config,
                opts=self.options, steps=steps, return_queries=return_queries, last_token=last_token)
            if queries is not None:
                queries = queries[:, :, 0]                                           # [G-1, L, N, H]
        else:
            tokens = model.greedy(last_logits)[None]                                 # [1, B]
        prefetch(tokens)
        return tokens, queries, steps, last_token

    def _check_steps(self, steps: int) -> None:
        if self._cache_len + steps > self.ctx_len:
            raise ValueError(f"max_new_tokens={steps + 1} does not fit: the cache holds {self._cache_len} "
                             f"tokens and ctx_len={self.ctx_len} leaves room for {self.ctx_len - self._cache_len + 1}")

    def _decode_python(self, first, position, steps, return_queries):
        """Seed 003's baseline: one compiled step per token, each token read back as it is made."""
        step = partial(model.decode_step_jit, cfg=self.config, opts=self.options, return_queries=return_queries)
        out = [int(to_host(first, src=self.where)[0])]
        tok, qs = first, []
        for _ in range(steps):
            tok, self.cache, q = step(self.params, self.cache, tok, position)
            position = position + 1
            out.append(int(to_host(tok, src=self.where)[0]))
            if q is not None:
                qs.append(q)
        return np.asarray(out, np.int32), (jnp.stack(qs) if qs else None)

    def generate(self, prompt: str, max_new_tokens: int) -> GenerateResult:
        """Prefill ``prompt`` then greedily decode ``max_new_tokens`` tokens; ``text`` is their decoding."""
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int")
        result = self.decode(self.prefill(prompt), max_new_tokens)
        result.text = self.tokenizer.decode(result.tokens.tolist(), skip_special_tokens=True)
        return result


def _check_last_token(last_token: bool, return_queries: bool, name: str, count: int, minimum: int) -> None:
    """``last_token=False`` feeds the last token for its queries only: it needs them, and a step."""
    if not last_token and not (return_queries and count >= minimum):
        raise ValueError(f"last_token=False needs return_queries=True and {name} >= {minimum}, got "
                         f"return_queries={return_queries}, {name}={count}")
