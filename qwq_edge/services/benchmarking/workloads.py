"""The prompts ``bench --workload`` measures, besides ``plain`` (filler text and a counting task).

``edit`` rewrites a source file with one change (most of the reply is copied from the
prompt), ``reasoning`` is a math word problem in the think format, ``story`` is free
prose, and ``sort`` (random numbers to sort) leaves nothing to copy in order.
"""

from __future__ import annotations

import random

WORKLOADS = ("plain", "edit", "reasoning", "story", "sort")

EDIT_SOURCE = '''import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Inventory:
    """Items in a store, with their prices and counts."""

    path: Path
    items: dict[str, int] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)

    def load(self) -> None:
        data = json.loads(self.path.read_text())
        self.items = data["items"]
        self.prices = data["prices"]

    def save(self) -> None:
        data = {"items": self.items, "prices": self.prices}
        self.path.write_text(json.dumps(data, indent=2))

    def add(self, name: str, count: int, price: float) -> None:
        self.items[name] = self.items.get(name, 0) + count
        self.prices[name] = price

    def remove(self, name: str, count: int) -> None:
        if self.items.get(name, 0) < count:
            raise ValueError(f"only {self.items.get(name, 0)} of {name} left")
        self.items[name] -= count

    def value(self) -> float:
        return sum(self.prices[name] * count for name, count in self.items.items())

    def report(self) -> str:
        lines = [f"{name}: {count} at {self.prices[name]:.2f}" for name, count in self.items.items()]
        return "\\n".join(lines) + f"\\ntotal: {self.value():.2f}"
'''

REASONING = (
    "A train leaves a station at 9:00 travelling at 60 km/h. A second train leaves the same station "
    "at 10:30 on the same track in the same direction at 90 km/h. At what time does the second train "
    "catch up with the first, and how far from the station are they then? Think step by step."
)

STORY = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def sort_prompt(count: int = 60, seed: int = 7) -> str:
    """Random numbers to sort: the reply repeats the numbers, but never in an order seen before."""
    rng = random.Random(seed)
    numbers = ", ".join(str(rng.randint(1, 9999)) for _ in range(count))
    return f"Sort these numbers in increasing order, comma separated, with no other text: {numbers}"


def workload_prompt(name: str) -> str:
    """The user message of a workload other than ``plain``."""
    if name == "edit":
        return (
            "Rewrite this Python file, renaming the variable `lines` in `report` to `rows`. "
            f"Reply with the whole file only, in one code block.\n\n```python\n{EDIT_SOURCE}```"
        )
    return {"reasoning": REASONING, "story": STORY, "sort": sort_prompt()}[name]
