"""The MLX engine, through mlx-lm (Metal on Apple Silicon; a correct but slow CPU build elsewhere).

Keeps mlx-lm's asynchronous evaluation: ``feed`` builds the forward pass and starts
it with ``mx.async_eval``, so the generation loop's Python work for the previous
token overlaps the model's computation; ``sample`` waits only when it needs the
next token's value. Sampling and penalties are mlx-lm's own (``make_sampler``,
``make_logits_processors``); a mask is an additive ``-inf`` row. The prompt cache is
mlx-lm's, trimmed to reuse the common prefix of consecutive requests.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import EngineUnavailableError, ModelFormatError
from ...sampling import SamplingParams
from ..base import CPU_PASS_COSTS, DEFAULT_CONTEXT, GPU_PASS_COSTS, EngineInfo
from ..pooled import LAST_ONLY, PooledSequence
from ..prompt_cache import PromptCache
from ..scheduler import Scheduler
from .folder import check_mlx_folder
from .thread import on_mlx_thread

try:
    import mlx.core as mx
    from mlx_lm.generate import maybe_quantize_kv_cache
    from mlx_lm.models.cache import BatchKVCache as BatchKVCache  # for pool
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
    from mlx_lm.sample_utils import make_logits_processors, make_sampler
    from mlx_lm.utils import load as mlx_load

    from .states import cache_bytes, cache_from_bytes, keeps_states
except ImportError as error:  # pragma: no cover - depends on the install
    raise EngineUnavailableError(
        f"the MLX engine needs mlx and mlx-lm (pip install 'qwq-edge[mlx]'): {error}"
    ) from None

PREFILL_STEP = 512
END_OF_TURN_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>")


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte → printable-character table used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def fill_cache(model: Any, cache: list[Any], tokens: list[int]) -> Iterator[list[int]]:
    """Run ``tokens`` of one sequence into its KV cache in steps, evaluating only the cache
    (the output head, vocabulary × hidden per token, is never computed for them); yield
    each step once the cache holds it."""
    for start in range(0, len(tokens), PREFILL_STEP):
        step = tokens[start : start + PREFILL_STEP]
        model(mx.array(step)[None], cache=cache)
        mx.eval([c.state for c in cache])
        yield step


class Logits(Protocol):
    """What a sampler reads: an ``MlxEngine``, or one sequence of an ``MlxPool``."""

    vocab_size: int
    logits: Any

    def row(self, at: int | None) -> int: ...

    def greedy(self, row: int) -> int: ...


class MlxSampler:
    """One generation's sampler: mlx-lm's sampler and penalty processors, plus a mask."""

    rng = None

    def __init__(self, engine: Logits, params: SamplingParams, seed: int) -> None:
        self._engine = engine
        on_mlx_thread(lambda: mx.random.seed(seed))
        self._sample = make_sampler(temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k)
        self._processors = make_logits_processors(
            repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
            repetition_context_size=params.penalty_window,
            presence_penalty=params.presence_penalty or None,
            presence_context_size=params.penalty_window,
            frequency_penalty=params.frequency_penalty or None,
            frequency_context_size=params.penalty_window,
        )
        self._history: list[int] = []
        self._masks: dict[Collection[int], Any] = {}
        self._greedy = params.greedy and not self._processors

    def _mask(self, banned: Collection[int]) -> Any:
        mask = self._masks.get(banned)
        if mask is None:
            row = mx.zeros((self._engine.vocab_size,), dtype=mx.float32)
            row[mx.array(sorted(banned))] = -float("inf")
            mask = self._masks[banned] = row
        return mask

    def sample(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> int:
        row = self._engine.row(at)
        self._last = (row, banned, banned_mask)
        if self._greedy and not banned and banned_mask is None:
            return self._engine.greedy(row)
        token = on_mlx_thread(lambda: self._draw(self._engine.logits[row][None], banned, banned_mask))
        if self._processors:
            self._history.append(token)
        return token

    def _draw(self, logits: Any, banned: Collection[int], banned_mask: Any) -> int:
        if self._processors:
            history = mx.array(self._history or [0])
            for processor in self._processors:
                logits = processor(history, logits)
        if banned:
            logits = logits + self._mask(banned)
        if banned_mask is not None:  # computed on the CPU while the pass ran; joins the graph lazily
            logits = mx.where(mx.array(banned_mask), -float("inf"), logits)
        return int(self._sample(logits - mx.logsumexp(logits, keepdims=True)).item())

    def accept(self, tokens: Sequence[int]) -> None:
        if self._processors:
            self._history.extend(tokens)

    def probabilities(self, banned: Collection[int] = (), at: int | None = None, banned_mask: Any = None) -> None:
        """mlx-lm's sampler does not give its distribution: a sampled draft is verified by equality."""
        return None

    def masked_row(self) -> np.ndarray:
        row, banned, banned_mask = self._last
        logits = on_mlx_thread(lambda: np.array(self._engine.logits[row].astype(mx.float32)))
        if banned:
            logits[list(banned)] = -np.inf
        if banned_mask is not None:
            logits[banned_mask] = -np.inf
        return logits


class MlxModel:
    """An MLX model folder loaded with mlx-lm: weights, tokenizer and facts, no cache."""

    name = "mlx"

    def __init__(self, path: str | Path, *, context_length: int | None = None) -> None:
        path = Path(path)
        config = check_mlx_folder(path)
        try:
            self.model, wrapper = on_mlx_thread(lambda: self._load(path))
        except (ValueError, FileNotFoundError, KeyError, TypeError, AttributeError) as error:
            raise ModelFormatError(f"mlx-lm could not load {path}: {error}") from None
        self._tokenizer = wrapper._tokenizer.backend_tokenizer
        self.vocab_size = int(config.get("vocab_size") or self._tokenizer.get_vocab_size())
        self._pieces: dict[int, bytes] = {}
        self._byte_decoder = _byte_decoder()
        added = self._tokenizer.get_added_tokens_decoder()
        self._control = {i for i, token in added.items() if token.special}
        self.special_texts = frozenset(token.content for token in added.values())
        self.end_of_generation = self._end_of_generation(wrapper, config, added)
        trained = int(config.get("max_position_embeddings") or 4096)
        self.pass_costs = GPU_PASS_COSTS if mx.default_device() == mx.gpu else CPU_PASS_COSTS
        self.info = EngineInfo(
            engine=self.name,
            model_path=str(path),
            model_name=str(config.get("_name_or_path") or path.name),
            architecture=str(config.get("model_type", "unknown")),
            context_length=context_length or min(trained, DEFAULT_CONTEXT),
            trained_context_length=trained,
            vocab_size=self.vocab_size,
            chat_template=getattr(wrapper._tokenizer, "chat_template", None),
            device="metal (gpu)" if mx.default_device() == mx.gpu else "cpu (MLX's CPU backend)",
            metadata={key: str(value) for key, value in config.items() if not isinstance(value, dict | list)},
        )

    def _load(self, path: Path) -> tuple[Any, Any]:
        """The model and tokenizer wrapper (a subclass loads them otherwise: sharded)."""
        return mlx_load(str(path))

    @staticmethod
    def _end_of_generation(wrapper: Any, config: dict[str, Any], added: dict[int, Any]) -> frozenset[int]:
        ids = set(wrapper.eos_token_ids or ())
        configured = config.get("eos_token_id")
        ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        ids.update(i for i, token in added.items() if token.content in END_OF_TURN_TEXTS)
        return frozenset(ids)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        # Like llama.cpp: without ``special``, control tokens' texts stay plain text.
        self._tokenizer.encode_special_tokens = not special
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            text = self._tokenizer.id_to_token(token) or ""
            if token in self._control:
                piece = b""
            elif all(char in self._byte_decoder for char in text):
                piece = bytes(self._byte_decoder[char] for char in text)
            else:  # an added, non-special token such as <think>
                piece = text.encode("utf-8")
            self._pieces[token] = piece
        return piece

    def close(self) -> None:
        """Drop the weights and hand MLX's freed buffers back to the system (MLX keeps them
        for reuse otherwise, and a server that unloads an idle model means to free them)."""
        self.model = None
        on_mlx_thread(mx.clear_cache)


class MlxEngine(MlxModel, PooledSequence):
    """An MLX model with one prompt cache: the one sequence of a pool of its own, so that its
    token bookkeeping (``PooledSequence``) is the pools' own. Unlike a pool's sequence, it
    starts each pass as soon as tokens are fed, asynchronously, so the caller's Python work
    for the token overlaps the model's computation; and its cache may be 8-bit."""

    def __init__(self, path: str | Path, *, context_length: int | None = None, kv_cache: str = "f16") -> None:
        MlxModel.__init__(self, path, context_length=context_length)
        self.scheduler = Scheduler(self, 1)
        PooledSequence.__init__(self, self, 0)
        self._kv_bits = 8 if kv_cache == "q8_0" else None
        self.cache = make_prompt_cache(self.model)
        if self._kv_bits is None and keeps_states(self.cache):
            #: States of recent prompts (``load`` sets it; None: none kept).
            self.prompt_cache: PromptCache | None = None
        #: Tokens the KV cache holds: more than ``evaluated`` after a rewind, until the next pass trims it.
        self.held = 0
        #: The last pass's logits, one row per token that kept them; row 0 chooses the
        #: token at position ``_rows_from + 1``.
        self.logits: Any = None
        self._argmax: Any = None
        self._argmax_list: list[int] | None = None
        self._rows_from = 0

    def feed(self, tokens: Sequence[int]) -> None:
        PooledSequence.feed(self, tokens)
        self.evaluate_pending()  # started now; ``sample`` waits only for the values it reads

    def decode(self, sequences: Sequence[Any]) -> None:
        """The pool's pass over its one sequence's pending tokens, started asynchronously."""
        on_mlx_thread(self._start_pass)

    def _start_pass(self) -> None:
        surplus = self.held - self.evaluated
        if surplus > 0:  # tokens rewound since the last pass
            trim_prompt_cache(self.cache, surplus)
            self.held = self.evaluated
        first = self.first_row()
        pending = self.cached_tokens[self.evaluated :]
        rows = self.position - first
        for step in fill_cache(self.model, self.cache, pending[:-rows]):
            self.evaluated += len(step)
            self.held = self.evaluated  # an interrupted prefill keeps what the cache holds
        self.logits = self.model(mx.array(pending[-rows:])[None], cache=self.cache)[0]
        # The greedy choices are computed in the same asynchronous graph as the logits.
        self._argmax, self._argmax_list = mx.argmax(self.logits, axis=-1), None
        maybe_quantize_kv_cache(self.cache, quantized_kv_start=0, kv_group_size=64, kv_bits=self._kv_bits)
        mx.async_eval(self.logits, self._argmax)
        self._rows_from, self.evaluated = first, self.position
        self.held, self.wanted_from = self.position, LAST_ONLY

    def row(self, at: int | None) -> int:
        """The row of ``logits`` that chooses the token at position ``at`` (None: the next one)."""
        return (self.position if at is None else at) - 1 - self._rows_from

    def save_state(self) -> bytes:
        return on_mlx_thread(lambda: cache_bytes(self.cache, self.evaluated))

    def restore_state(self, state: bytes) -> None:
        def restore() -> None:
            self.cache = cache_from_bytes(state, len(self.cache))
            self.held = self.cache[0].offset

        on_mlx_thread(restore)

    def greedy(self, row: int) -> int:
        """The argmax of one row, read back once per pass."""
        if self._argmax_list is None:
            self._argmax_list = on_mlx_thread(self._argmax.tolist)
        return self._argmax_list[row]

    def new_sampler(self, params: SamplingParams, seed: int) -> MlxSampler:
        return MlxSampler(self, params, seed)

    def close(self) -> None:
        self.cache = []
        super().close()
