"""Which catalog entry's defaults apply to a loaded model: sampling, system prompt, effort budgets.

A model is matched by the words in its name (GGUF ``general.name``, or an MLX
folder's name): the first catalog entry whose ``match`` words all appear wins.
Models the catalog does not know get generic defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sampling import SamplingParams
from .entries import load_catalog


@dataclass(frozen=True)
class Family:
    key: str
    sampling: SamplingParams
    system_prompt: str | None = None
    effort: dict[str, int] = field(default_factory=dict)
    #: The sampling defaults when it answers without thinking, where they differ (Qwen3's card).
    sampling_no_think: SamplingParams | None = None


GENERIC = Family("generic", SamplingParams())


def _words(name: str) -> str:
    return name.lower().replace("-", " ").replace("_", " ")


def family_for(model_name: str) -> Family:
    """The defaults for a model of this name."""
    words = _words(model_name)
    for entry in load_catalog():
        if entry.match and all(word in words for word in entry.match):
            return Family(entry.name, entry.sampling, entry.system_prompt, dict(entry.effort), entry.sampling_no_think)
    return GENERIC
