"""Per-family defaults taken from the model cards: sampling and system prompt.

A model is matched by the words in its name (GGUF ``general.name``); the first
family whose words all appear wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from .reasoning.formats import QWQ_PREVIEW_SYSTEM
from .sampling import SamplingParams


@dataclass(frozen=True)
class Family:
    key: str
    name_words: tuple[str, ...]
    sampling: SamplingParams
    system_prompt: str | None = None

    def matches(self, model_name: str) -> bool:
        name = model_name.lower().replace("-", " ").replace("_", " ")
        return all(word in name for word in self.name_words)


FAMILIES: tuple[Family, ...] = (
    Family(
        "qwq-32b-preview",
        ("qwq", "preview"),
        SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05),
        system_prompt=QWQ_PREVIEW_SYSTEM,
    ),
    Family("qwq-32b", ("qwq",), SamplingParams(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)),
    Family("deepseek-r1-distill", ("r1", "distill"), SamplingParams(temperature=0.6, top_p=0.95, top_k=0)),
    Family(
        "qwen2.5",
        ("qwen2.5",),
        SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05),
    ),
)

GENERIC = Family("generic", (), SamplingParams())


def family_for(model_name: str) -> Family:
    """The family whose defaults apply to a model of this name."""
    return next((family for family in FAMILIES if family.matches(model_name)), GENERIC)
