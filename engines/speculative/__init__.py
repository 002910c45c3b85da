"""Speculative prefill (SpecPrefill, ICML 2025): a draft scores the prompt, the base prefills the kept tokens.

:mod:`.engine` is the pipeline (its windows and spans are the TTFT fields), :mod:`.scoring` the
host (numpy, QEfficient's design) and device (one jitted program) token scoring, :mod:`.handover`
the pruned base chunk queued on the device behind device scoring.
"""

from spectrace.engines.speculative.engine import SpecPrefillEngine, SpecResult

__all__ = ["SpecPrefillEngine", "SpecResult"]
