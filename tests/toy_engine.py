"""A third engine, for tests only: a random tiny numpy model behind the engine interface.

It proves that an engine is one module and one ``register(spec)`` (nothing else in
qwq-edge names it), and it lets the generation loop and the reasoning controller be
tested in milliseconds, without llama.cpp or MLX.

The model is a small recurrent network: each fed token updates a hidden state
(``tanh(state @ mix + embed[token])``), the states of the cached tokens are its
"KV cache" (``rewind`` drops them), and the logits are ``state @ out + bias``. Its
vocabulary is byte-level (256 byte tokens), plus a few multi-byte words and the
ChatML and thinking specials. So that tests can reach every behaviour on purpose:

- ``bias`` keeps the model, by default, to lowercase letters and spaces (no special
  token, no sentence end, so no loop or early close happens by chance);
- ``script`` maps a draw index (the n-th ``sample`` of a generation) to a token the
  model then strongly prefers; a banned token stays banned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qwq_edge.architecture.shape import ModelShape
from qwq_edge.engines.adapter import AutoChoice, EngineOptions, EngineSpec, ModelFacts
from qwq_edge.engines.base import EngineInfo, check_room, prefill_reusing
from qwq_edge.engines.registry import register, unregister
from qwq_edge.engines.scheduler import Scheduler
from qwq_edge.sampling import SamplingParams

CONTROL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
SPECIALS = (*CONTROL, "<think>", "</think>")
WORDS = ("你", "好", "世界", "Wait")
#: What a scripted token adds to its logit: far above anything the weights give.
SCRIPT_BOOST = 1000.0
DEFAULT_BIAS = -30.0


class ToyVocab:
    """256 byte tokens, then ``WORDS``, then ``SPECIALS``."""

    def __init__(self) -> None:
        texts = [*WORDS, *SPECIALS]
        self.pieces = [bytes([b]) for b in range(256)] + [text.encode() for text in texts]
        self.ids = {text: 256 + i for i, text in enumerate(texts)}
        self._words = sorted(((word.encode(), self.ids[word]) for word in WORDS), key=lambda w: -len(w[0]))
        self._specials = re.compile("|".join(re.escape(text) for text in SPECIALS))

    def __len__(self) -> int:
        return len(self.pieces)

    def _plain(self, data: bytes) -> list[int]:
        tokens, i = [], 0
        while i < len(data):
            word = next(((w, t) for w, t in self._words if data.startswith(w, i)), None)
            tokens.append(word[1] if word else data[i])
            i += len(word[0]) if word else 1
        return tokens

    def encode(self, text: str, special: bool) -> list[int]:
        if not special:
            return self._plain(text.encode())
        tokens, position = [], 0
        for match in self._specials.finditer(text):
            tokens += [*self._plain(text[position : match.start()].encode()), self.ids[match.group()]]
            position = match.end()
        return tokens + self._plain(text[position:].encode())

    def token_bytes(self, token: int) -> bytes:
        text = self.pieces[token].decode("utf-8", "replace")
        return b"" if text in CONTROL else self.pieces[token]


class ToySampler:
    """Greedy argmax, or temperature (and top-k) sampling from its own seeded RNG."""

    def __init__(self, engine: ToyEngine, params: SamplingParams, seed: int) -> None:
        self._engine = engine
        self._params = params
        self.rng = np.random.default_rng(seed)
        self.draws = 0

    def _logits(self, banned: Collection[int], at: int | None, banned_mask: Any = None) -> np.ndarray:
        """The logits of one draw: the script's boost, then the masks."""
        logits = self._engine.logits(at)
        scripted = self._engine.script.get(self.draws)
        self.draws += 1
        if scripted is not None:
            logits[scripted] += SCRIPT_BOOST
        if banned:
            logits[list(banned)] = -np.inf
        if banned_mask is not None:
            logits[banned_mask] = -np.inf
        self.last = logits.copy()
        return logits

    def _distribution(self, logits: np.ndarray) -> np.ndarray:
        if self._params.top_k:
            logits[np.argsort(logits)[: -self._params.top_k]] = -np.inf
        weights = np.exp((logits - logits.max()) / self._params.temperature)
        return weights / weights.sum()

    def probabilities(
        self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None
    ) -> np.ndarray | None:
        return None if self._params.greedy else self._distribution(self._logits(banned, at, banned_mask))

    def sample(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> int:
        logits = self._logits(banned, at, banned_mask)
        if self._params.greedy:
            return int(np.argmax(logits))
        return int(self.rng.choice(len(logits), p=self._distribution(logits)))

    def masked_row(self) -> np.ndarray:
        return self.last

    def accept(self, tokens: Sequence[int]) -> None:
        """Forced tokens need no record: the toy sampler has no penalties."""


class ToyEngine:
    """The toy model, with one cache of hidden states."""

    #: Its passes cost the same for any number of tokens, so speculation always drafts.
    pass_costs = ((1, 1.0), (2, 1.0))

    def __init__(
        self,
        *,
        seed: int = 0,
        dim: int = 16,
        context_length: int = 512,
        path: str = "toy",
        chat_template: str | None = None,
    ) -> None:
        self.vocab = ToyVocab()
        size = len(self.vocab)
        rng = np.random.default_rng(seed)
        self._embed = rng.normal(0.0, 1.0, (size, dim))
        self._mix = rng.normal(0.0, 1.0 / np.sqrt(dim), (dim, dim))
        self._out = rng.normal(0.0, 1.0, (dim, size))
        self.bias = np.full(size, DEFAULT_BIAS)
        self.bias[[ord(" "), *range(ord("a"), ord("z") + 1)]] = 0.0
        self.script: dict[int, int] = {}
        self._tokens: list[int] = []
        self._states: list[np.ndarray] = []
        #: Forward passes run (``feed`` and ``feed_all`` calls), for the speculation tests.
        self.passes = 0
        self.end_of_generation = frozenset({self.vocab.ids["<|im_end|>"], self.vocab.ids["<|endoftext|>"]})
        self.special_texts = frozenset(SPECIALS)
        self.info = EngineInfo(
            engine="toy",
            model_path=path,
            model_name="toy",
            architecture="toy-rnn",
            context_length=context_length,
            trained_context_length=context_length,
            vocab_size=size,
            chat_template=chat_template,
            device="cpu (numpy)",
        )

    def id(self, text: str) -> int:
        """The id of a special token or word."""
        return self.vocab.ids[text]

    def say(self, first_draw: int, text: str) -> None:
        """Script ``text`` (special tokens allowed) from the ``first_draw``-th sample on."""
        for i, token in enumerate(self.vocab.encode(text, special=True)):
            self.script[first_draw + i] = token

    @property
    def position(self) -> int:
        return len(self._tokens)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self.vocab.encode(text, special)

    def token_bytes(self, token: int) -> bytes:
        return self.vocab.token_bytes(token)

    def prefill(self, tokens: Sequence[int]) -> int:
        return prefill_reusing(self, self._tokens, tokens)

    def rewind(self, position: int) -> None:
        del self._tokens[position:], self._states[position:]

    def feed(self, tokens: Sequence[int]) -> None:
        check_room(self.position + len(tokens), self.info.context_length)
        self.passes += 1
        for token in tokens:
            previous = self._states[-1] if self._states else np.zeros(self._mix.shape[0])
            self._states.append(np.tanh(previous @ self._mix + self._embed[token]))
            self._tokens.append(token)

    def feed_all(self, tokens: Sequence[int]) -> None:
        """The toy keeps every state, so every position's logits are at hand anyway."""
        self.passes += 1
        self.feed(tokens)
        self.passes -= 1

    def logits(self, at: int | None = None) -> np.ndarray:
        """The logits choosing the token at position ``at`` (default: the next one), as a new
        array the caller may change."""
        return self._states[(self.position if at is None else at) - 1] @ self._out + self.bias

    def new_sampler(self, params: SamplingParams, seed: int) -> ToySampler:
        return ToySampler(self, params, seed)

    def close(self) -> None:
        self._tokens, self._states = [], []


class ToySequence(ToyEngine):
    """One sequence of a ``ToyPool``: fed tokens wait until logits are needed, when the pool's
    scheduler runs them (``evaluate``)."""

    def __init__(self, pool: ToyPool, index: int, **settings: object) -> None:
        super().__init__(**settings)  # the same seed: the same weights as every other sequence
        self.pool, self.index, self.scheduler = pool, index, pool.scheduler

    @property
    def cached_tokens(self) -> list[int]:
        return self._tokens

    @property
    def pending(self) -> int:
        return len(self._tokens) - len(self._states)

    def feed(self, tokens: Sequence[int]) -> None:
        check_room(self.position + len(tokens), self.info.context_length)
        self._tokens.extend(tokens)
        self.scheduler.fed(self)

    def rewind(self, position: int) -> None:
        self.scheduler.settle(self)
        super().rewind(position)

    def run(self, count: int) -> None:
        """Compute the states of the next ``count`` pending tokens (a part of one pass)."""
        for token in self._tokens[len(self._states) : len(self._states) + count]:
            previous = self._states[-1] if self._states else np.zeros(self._mix.shape[0])
            self._states.append(np.tanh(previous @ self._mix + self._embed[token]))

    def forget_logits(self) -> None:
        del self._states[len(self._tokens) - 1 :]

    def logits(self, at: int | None = None) -> np.ndarray:
        self.scheduler.evaluate(self)  # also waits for a pass that ran its tokens but has not ended
        return super().logits(at)


class ToyPool:
    """Several toy sequences whose passes run together, up to ``capacity`` tokens a pass;
    ``passes`` records each pass's sequences (by index) for the scheduler's tests."""

    def __init__(self, parallel: int, capacity: int = 64, **settings: object) -> None:
        self.capacity = capacity
        self.scheduler = Scheduler(self, parallel)
        self.sequences = [ToySequence(self, index, **settings) for index in range(parallel)]
        first = self.sequences[0]
        self.info, self.end_of_generation, self.special_texts = first.info, first.end_of_generation, first.special_texts
        self.tokenize, self.token_bytes, self.id = first.tokenize, first.token_bytes, first.id
        self.passes: list[list[int]] = []

    def decode(self, sequences: Sequence[ToySequence]) -> None:
        room, ran = self.capacity, []
        for sequence in sequences:
            count = min(sequence.pending, room)
            if count:
                sequence.run(count)
                room -= count
                ran.append(sequence.index)
        self.passes.append(ran)

    def close(self) -> None:
        for sequence in self.sequences:
            sequence.close()


# -- the spec: a ``.toy`` file is JSON with the toy model's settings ----------------------


def _settings(path: Path) -> dict:
    return json.loads(path.read_text())


def _shape(path: Path) -> ModelShape:
    settings = _settings(path)
    dim, context = settings.get("dim", 16), settings.get("context_length", 512)
    return ModelShape(path.stem, 1, 1, dim, 2 * dim * len(ToyVocab()) * 8, context)


def _facts(path: Path) -> ModelFacts:
    return ModelFacts("toy", "toy-rnn", _shape(path).weights_bytes // 8, "float64", None, {path.name: 0})


def _open(path: Path, options: EngineOptions) -> ToyEngine | ToyPool:
    settings = _settings(path)
    context = options.context_length or settings.get("context_length", 512)
    model = {"seed": settings.get("seed", 0), "dim": settings.get("dim", 16), "context_length": context}
    model["path"] = str(path)
    if options.parallel > 1:
        return ToyPool(options.parallel, **model)
    return ToyEngine(**model)


SPEC = EngineSpec(
    name="toy",
    format="toy",
    describes="a toy model file",
    claims=lambda path: path.is_file() and path.suffix == ".toy",
    shape=_shape,
    facts=_facts,
    auto=lambda: AutoChoice(True, "a toy model file (numpy, for tests)"),
    open=_open,
    mismatch="toy runs .toy files; {path} is {kind} (use --engine {engine})",
    batches=True,
)


@contextmanager
def toy_registered() -> Iterator[EngineSpec]:
    """The toy engine in the registry for the duration of the block."""
    register(SPEC)
    try:
        yield SPEC
    finally:
        unregister(SPEC.name)
