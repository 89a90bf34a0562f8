"""Where drafted tokens come from: the text itself (n-gram lookup) or a small draft model.

A proposer sees every token the generation keeps (``extend``) or takes back
(``truncate``) and, asked for drafts, returns them with a *kind* (how the tuner files
their acceptance rate) and how many it could offer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..catalog.planner import model_shape
from ..engines import open_engine
from ..engines.base import Engine
from ..errors import InvalidRequestError
from ..sampling import SamplingParams
from .ngram import NgramIndex
from .tuner import MAX_DRAFT

#: Ids compared between a draft model's vocabulary and the target's (besides the special ones).
VOCAB_SAMPLE = 4096


class Proposer(Protocol):
    #: What ``GenerationStats.draft`` reports ("ngram", or the draft model's name).
    name: str
    #: The cost of drafting one token ÷ the target's one-token pass (0 for a lookup).
    draft_cost: float

    def extend(self, tokens: Sequence[int]) -> None: ...

    def truncate(self, length: int) -> None: ...

    def available(self) -> tuple[int, int]:
        """The kind of the next proposal and how many tokens it can offer (0: none)."""
        ...

    def prior(self, kind: int) -> float:
        """The acceptance rate to expect of an untried kind."""
        ...

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` drafted tokens to follow the history."""
        ...

    def distributions(self) -> Sequence[np.ndarray] | None:
        """The distribution each token of the last proposal was drawn from (None: chosen, not
        drawn; such drafts are verified by sampling the target and comparing)."""
        ...


class WhileAlone:
    """A proposer that drafts only while ``alone()``: in a pool, while no other generation
    shares the passes (a pass's logits serve every sequence in it, and drafts would make
    every other stream's pass costlier)."""

    def __init__(self, proposer: Proposer, alone: Callable[[], bool]) -> None:
        self._proposer, self._alone = proposer, alone

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proposer, name)

    def available(self) -> tuple[int, int]:
        return self._proposer.available() if self._alone() else (0, 0)


class NgramProposer:
    """Drafts copied from the longest earlier occurrence of the history's suffix; the kind
    is the match length, since a long match is far more often right."""

    name = "ngram"
    draft_cost = 0.0

    def __init__(self, history: Sequence[int], max_draft: int) -> None:
        self._index = NgramIndex(history)
        self._max = max_draft
        self._drafts: list[int] = []

    def extend(self, tokens: Sequence[int]) -> None:
        self._index.extend(tokens)

    def truncate(self, length: int) -> None:
        self._index.truncate(length)

    def available(self) -> tuple[int, int]:
        self._drafts, match = self._index.propose(self._max)
        return match, len(self._drafts)

    @staticmethod
    def prior(kind: int) -> float:
        """A one-token match is a coin flip; a long one is right most of the time."""
        return kind / (kind + 1.0)

    def propose(self, k: int) -> list[int]:
        return self._drafts[:k]

    @staticmethod
    def distributions() -> None:
        return None


class DraftModelProposer:
    """A second, small model with the same tokenizer, on the same engine.

    Greedy (or where its sampler cannot give its distribution), it proposes its top
    token: a deterministic proposal, verified by sampling the target and comparing.
    Sampling, it draws each draft from its own distribution ``q`` with the target's
    settings, and the verifier applies the rejection rule against the target's ``p``.
    """

    kind = 0

    def __init__(
        self,
        draft: Engine,
        history: Sequence[int],
        draft_cost: float,
        max_draft: int,
        sampling: SamplingParams | None = None,
        seed: int = 0,
    ) -> None:
        self.name = draft.info.model_name
        self.draft_cost = draft_cost
        self._draft = draft
        self._sampler = draft.new_sampler(SamplingParams(temperature=0.0), 0)
        #: The sampler drafts are drawn with (None: greedy drafts).
        self._drawn = draft.new_sampler(sampling, seed) if sampling is not None and not sampling.greedy else None
        self._history = list(history)
        self._max = max_draft
        self._distributions: list[np.ndarray] | None = None

    def extend(self, tokens: Sequence[int]) -> None:
        self._history.extend(tokens)

    def truncate(self, length: int) -> None:
        del self._history[length:]

    def available(self) -> tuple[int, int]:
        room = self._draft.info.context_length - len(self._history)
        return self.kind, max(0, min(self._max, room - 1))

    @staticmethod
    def prior(kind: int) -> float:
        return 0.6

    def propose(self, k: int) -> list[int]:
        self._draft.prefill(self._history)  # keeps the prefix it already holds
        drafts: list[int] = []
        self._distributions = [] if self._drawn is not None else None
        while True:
            drafts.append(self._next())
            if len(drafts) == k:
                return drafts
            self._draft.feed(drafts[-1:])

    def _next(self) -> int:
        q = self._drawn.probabilities() if self._drawn is not None else None
        if q is None:
            self._drawn = self._distributions = None  # the engine's sampler does not say: greedy drafts
            return self._sampler.sample()
        self._distributions.append(q)
        return int(self._drawn.rng.choice(len(q), p=q))

    def distributions(self) -> Sequence[np.ndarray] | None:
        return self._distributions


def draft_seed(seed: int) -> int:
    """The draft's seed: another stream than the target's, whose uniforms decide acceptance."""
    return (seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF


def check_same_vocabulary(target: Engine, draft: Engine) -> None:
    """Refuse a draft model whose tokens mean something else than the target's."""
    where = f"the draft model {draft.info.model_name} ({draft.info.model_path})"
    size = min(target.info.vocab_size, draft.info.vocab_size)
    step = max(1, size // VOCAB_SAMPLE)
    ids = sorted({*range(0, size, step), *(t for t in target.end_of_generation if t < size)})
    for token in ids:
        if target.token_bytes(token) != draft.token_bytes(token):
            raise InvalidRequestError(
                f"{where} has another tokenizer than {target.info.model_name}: token {token} is "
                f"{draft.token_bytes(token)!r} there and {target.token_bytes(token)!r} here; "
                "use a draft model of the same family (or --draft ngram)"
            )


class DraftModels:
    """The draft models one target model has loaded, by the name the request gave."""

    def __init__(self, target: Engine) -> None:
        self._target = target
        self._loaded: dict[str, tuple[Engine, float]] = {}

    def proposer(
        self,
        draft: str,
        history: Sequence[int],
        max_draft: int = MAX_DRAFT,
        sampling: SamplingParams | None = None,
        seed: int = 0,
    ) -> Proposer | None:
        """The proposer ``draft`` names (``off``: none; ``ngram``: lookup; else a model path, drafting
        with the target's ``sampling``, from its own RNG)."""
        if draft == "off":
            return None
        if draft == "ngram":
            return NgramProposer(history, max_draft)
        engine, cost = self._load(draft)
        return DraftModelProposer(engine, history, cost, max_draft, sampling, draft_seed(seed))

    def _load(self, path: str) -> tuple[Engine, float]:
        if path not in self._loaded:
            if not Path(path).exists():
                raise InvalidRequestError(f"draft must be ngram, off or a draft model's path; {path} does not exist")
            target = self._target.info
            engine, _ = open_engine(path, target.engine, context_length=target.context_length)
            try:
                check_same_vocabulary(self._target, engine)
            except InvalidRequestError:
                engine.close()
                raise
            # Decode is bound by reading the weights: a draft pass costs about its size's share.
            cost = model_shape(path).weights_bytes / max(1, model_shape(target.model_path).weights_bytes)
            self._loaded[path] = engine, cost
        return self._loaded[path]

    def close(self) -> None:
        for engine, _ in self._loaded.values():
            engine.close()
        self._loaded.clear()
