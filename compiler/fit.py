"""Fit levels: how comfortably a placed candidate fits the budget it is placed in, by declared rules.

A candidate that fits is `comfortable` unless a rule of FIT_RULES marks it `tight`; one that does
not fit is rejected before any rule is asked. Strategies take a tight candidate only when no
comfortable one serves the role, and a tight pick is warning W320 in the build summary. A new rule
is one FitRule in FIT_RULES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

COMFORTABLE, TIGHT = "comfortable", "tight"
LEVELS = (COMFORTABLE, TIGHT)  # best first
MAX_FILL = 0.85  # selection.max_fill's default: room for the OS, an IDE and a browser beside the model


@dataclass(frozen=True)
class Fill:
    """What the rules judge: a need placed in a budget, beside what other resident roles hold there."""

    need_mb: int
    used_mb: int  # taken in the same budget by resident models packed before (0: the role loads alone)
    budget_mb: int  # the usable MiB of the placement: VRAM on gpu, RAM on cpu, both on split
    placement: str
    max_fill: float  # selection.max_fill

    @property
    def ratio(self) -> float:
        return (self.used_mb + self.need_mb) / self.budget_mb if self.budget_mb else 1.0


@dataclass(frozen=True)
class FitRule:
    level: str  # the level a candidate gets when `applies`
    applies: Callable[[Fill], bool]
    reason: Callable[[Fill], str]


FIT_RULES: tuple[FitRule, ...] = (
    FitRule(TIGHT, lambda f: f.ratio > f.max_fill,
            lambda f: f"fills {f.ratio:.0%} of {f.budget_mb:,} MiB {f.placement}, above max_fill {f.max_fill:.0%}"),
)


def level(fill: Fill) -> tuple[str, str]:
    """(level, why) of a candidate that fits: the first rule that applies, else comfortable."""
    for rule in FIT_RULES:
        if rule.applies(fill):
            return rule.level, rule.reason(fill)
    return COMFORTABLE, f"fills {fill.ratio:.0%} of {fill.budget_mb:,} MiB {fill.placement}"


def rank(fit_level: str | None) -> int:
    """Strategies' order: comfortable before tight."""
    return LEVELS.index(fit_level) if fit_level in LEVELS else len(LEVELS)
