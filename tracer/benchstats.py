"""Seed 003's benchmark protocol as pure functions: n runs, mean ± std, effect vs one baseline.

Why pure functions over plain dicts: ``spectrace bench`` collects per-run phase timings (or whole
``ttft.json`` documents), and the report, the command line and the tests all need the same
numbers. Keeping the statistics free of I/O, clocks and JAX lets them be checked against known
inputs and reused by :mod:`tracer.report`.

The protocol (seeds/003): every variant is run n times (default 5) and reported as
mean ± sample standard deviation (ddof=1; one run has std 0); each variant's effect is its mean
minus the baseline's mean, in seconds and in percent of the baseline's mean. Every variant is
compared against the *same* baseline, never against each other.

Input shape::

    {"baseline": [{"prefill": 3.1, "generation": 0.59, "total": 3.69}, ...],
     "prefill_scan": [{"prefill": 0.27, "generation": 0.59, "total": 0.86}, ...]}

``ttft.json`` documents work too: pass ``phases=TTFT_PHASES`` so only the TTFT windows are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["TTFT_PHASES", "Stat", "Effect", "VariantStats", "BenchResult", "summarize", "compare",
           "render_markdown", "to_json"]

# The TTFT windows of DESIGN.md a bench compares, in the order a table prints them.
TTFT_PHASES: tuple[str, ...] = ("ttft_spec_device_s", "ttft_host_scoring_s",
                                "ttft_base_pruned_only_s", "ttft_speculative_s", "ttft_baseline_s")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1) of ``n`` values; ``std`` is 0 when n == 1."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Effect:
    """A variant's mean minus the baseline's mean; ``pct`` is None when the baseline mean is 0."""

    delta: float
    pct: float | None

    def format(self, digits: int = 3) -> str:
        pct = "n/a" if self.pct is None else f"{self.pct:+.2f}%"
        return f"{self.delta:+.{digits}f} ({pct})"


@dataclass(frozen=True)
class VariantStats:
    """One variant: its phases' statistics and (None for the baseline) its effects."""

    name: str
    n: int
    phases: dict[str, Stat]
    effects: dict[str, Effect] | None = None


@dataclass(frozen=True)
class BenchResult:
    """Every variant, baseline first, measured on the same phases."""

    baseline: str
    phases: tuple[str, ...]
    variants: tuple[VariantStats, ...] = field(default_factory=tuple)

    def to_markdown(self, **kwargs: Any) -> str:
        return render_markdown(self, **kwargs)

    def to_json(self) -> dict:
        return to_json(self)


def summarize(values: Sequence[float]) -> Stat:
    """Mean ± sample std of ``values`` (ddof=1, as seed 003 reports; one value gives std 0)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize() needs at least one value, got an empty sequence")
    n = len(xs)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Stat(mean, std, n)


def _effect(variant: Stat, baseline: Stat) -> Effect:
    delta = variant.mean - baseline.mean
    pct = None if baseline.mean == 0 else 100.0 * delta / baseline.mean
    return Effect(delta, pct)


def finite(x: Any) -> float | None:
    """``x`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        v = float(x)  # an int beyond float's range raises OverflowError
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def _value(variant: str, i: int, phase: str, run: Mapping[str, Any]) -> float:
    v = finite(run[phase])
    if v is None:
        raise ValueError(f"variant {variant!r} run {i}: phase {phase!r} must be a finite number of "
                         f"seconds, got {run[phase]!r}")
    return v


def compare(runs: Mapping[str, Sequence[Mapping[str, Any]]], *, baseline: str = "baseline",
            phases: Sequence[str] | None = None) -> BenchResult:
    """Statistics of every variant and its effect against ``baseline``.

    ``phases`` defaults to the keys of the baseline's first run; then every run of every variant
    must have exactly those keys (a missing or extra phase is a bench bug worth failing on).
    With explicit ``phases`` each run must have them and other keys are ignored, so whole
    ``ttft.json`` documents can be passed.
    """
    if not runs:
        raise ValueError("compare() got no variants; expected e.g. {'baseline': [run, ...], ...}")
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not one of the variants {sorted(runs)}")
    for name, rs in runs.items():
        if not rs:
            raise ValueError(f"variant {name!r} has no runs; each variant needs at least one")
    strict = phases is None
    phase_list = tuple(runs[baseline][0]) if phases is None else tuple(phases)
    if not phase_list:
        raise ValueError("no phases to compare: the baseline's first run is empty and no "
                         "phases= were given")
    wanted = set(phase_list)
    values: dict[str, dict[str, list[float]]] = {}
    for name, rs in runs.items():
        per_phase: dict[str, list[float]] = {p: [] for p in phase_list}
        for i, run in enumerate(rs):
            keys = set(run)
            missing = sorted(wanted - keys)
            extra = sorted(keys - wanted) if strict else []
            if missing or extra:
                raise ValueError(f"variant {name!r} run {i} has mismatched phases: missing "
                                 f"{missing}, unexpected {extra}; expected {list(phase_list)}")
            for p in phase_list:
                per_phase[p].append(_value(name, i, p, run))
        values[name] = per_phase

    base_stats = {p: summarize(values[baseline][p]) for p in phase_list}
    variants = [VariantStats(baseline, len(runs[baseline]), base_stats, None)]
    for name in runs:
        if name == baseline:
            continue
        stats = {p: summarize(values[name][p]) for p in phase_list}
        effects = {p: _effect(stats[p], base_stats[p]) for p in phase_list}
        variants.append(VariantStats(name, len(runs[name]), stats, effects))
    return BenchResult(baseline, phase_list, tuple(variants))


def render_markdown(result: BenchResult, *, unit: str = "s", digits: int = 3,
                    effect_phases: Sequence[str] | None = None) -> str:
    """A Markdown table: rows are variants, columns are n, each phase's mean ± std, then effects.

    Effect columns (``Δ total s (%)``) default to every phase, like seed 003's "Effect vs
    baseline" lists; the baseline row shows ``—`` there.
    """
    eff = tuple(result.phases if effect_phases is None else effect_phases)
    unknown = [p for p in eff if p not in result.phases]
    if unknown:
        raise ValueError(f"effect_phases {unknown} are not measured phases {list(result.phases)}")
    header = (["variant", "n"] + [f"{p} ({unit})" for p in result.phases]
              + [f"Δ {p} {unit} (%)" for p in eff])
    lines = ["| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for v in result.variants:
        label = f"{v.name} (baseline)" if v.name == result.baseline else v.name
        cells = [_md(label), str(v.n)] + [v.phases[p].format(digits) for p in result.phases]
        cells += ["—" if v.effects is None else v.effects[p].format(digits) for p in eff]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    # A pipe in a variant name would split the cell.
    return str(text).replace("|", "\\|")


def to_json(result: BenchResult) -> dict:
    """A JSON-ready dict: ``{baseline, phases, variants: [{name, n, phases: {p: {mean, std, n}},
    effects: {p: {delta_s, pct}} | None}]}``."""
    return {
        "schema": "spectrace.bench/1",
        "baseline": result.baseline,
        "phases": list(result.phases),
        "variants": [{
            "name": v.name,
            "n": v.n,
            "phases": {p: {"mean": s.mean, "std": s.std, "n": s.n} for p, s in v.phases.items()},
            "effects": None if v.effects is None else
            {p: {"delta_s": e.delta, "pct": e.pct} for p, e in v.effects.items()},
        } for v in result.variants],
    }
