"""Effort presets: one word for a thinking budget and a minimum.

Explicit ``max_thinking_tokens`` / ``min_thinking_tokens`` override the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidRequestError


@dataclass(frozen=True)
class Effort:
    max_thinking_tokens: int | None
    min_thinking_tokens: int


EFFORTS: dict[str, Effort] = {
    "minimal": Effort(max_thinking_tokens=128, min_thinking_tokens=0),
    "low": Effort(max_thinking_tokens=512, min_thinking_tokens=0),
    "medium": Effort(max_thinking_tokens=2048, min_thinking_tokens=0),
    "high": Effort(max_thinking_tokens=8192, min_thinking_tokens=256),
    "max": Effort(max_thinking_tokens=None, min_thinking_tokens=1024),
}


def effort_table() -> str:
    """The presets as one line, for ``--help``."""
    presets = "; ".join(
        f"{name}: budget {e.max_thinking_tokens or 'none'}, minimum {e.min_thinking_tokens}"
        for name, e in EFFORTS.items()
    )
    return f"{presets}; a catalog model may set its own budgets"


def apply_effort(
    effort: str | None, max_thinking: int | None, min_thinking: int | None, model_budgets: dict[str, int] | None = None
) -> tuple[int | None, int]:
    """The budget and minimum to use: the explicit numbers, else the preset's, else none.

    ``model_budgets`` (a catalog entry's ``effort`` table) replaces the presets' budgets
    for the levels it names.
    """
    if effort is None:
        return max_thinking, min_thinking or 0
    if effort not in EFFORTS:
        raise InvalidRequestError(f"unknown effort {effort!r}; choose one of {', '.join(EFFORTS)}")
    preset = EFFORTS[effort]
    preset_budget = (model_budgets or {}).get(effort, preset.max_thinking_tokens)
    budget = max_thinking if max_thinking is not None else preset_budget
    minimum = min_thinking if min_thinking is not None else preset.min_thinking_tokens
    if budget is not None and minimum > budget:
        minimum = budget  # an explicit smaller budget wins over the preset's minimum
    return budget, minimum
