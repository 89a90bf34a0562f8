"""The Python API: ``load`` a model, then ``generate``, ``stream`` or ``chat``.

A ``Model`` serves one request at a time: concurrent calls from several threads
wait for a lock. ``cancel()`` (from any thread) stops the running generation at
the next token; the model stays usable.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engines import open_engine
from .engines.base import KV_CACHE_TYPES, Engine, EngineInfo
from .errors import ContextOverflowError, InvalidRequestError
from .events import Done, Event, GenerationResult, GenerationStats, collect
from .families import family_for
from .generate import generate_step
from .planner import MemoryPlan, memory_budget, model_shape, plan_memory
from .prompt import Message, PromptBuilder, as_messages
from .reasoning.controller import (
    ANSWER_RESERVE,
    NUDGE_TEXT,
    WAIT_TEXT,
    ControlTokens,
    ReasoningController,
    ThinkingLimits,
)
from .reasoning.effort import apply_effort
from .reasoning.formats import ReasoningFormat, resolve_format
from .reasoning.language import LANGUAGE_CHOICES, LANGUAGE_SCRIPTS, banned_tokens, detect_language
from .sampling import SamplingParams

if TYPE_CHECKING:
    from .chat import Chat

Prompt = str | Iterable[Message | dict[str, str]]


@dataclass(frozen=True)
class ReasoningOptions:
    """The per-request options of ``Model.stream`` other than sampling overrides."""

    max_thinking_tokens: int | None
    min_thinking_tokens: int | None
    max_answer_tokens: int | None
    effort: str | None
    think: bool
    loop_guard: bool
    language: str
    language_in_thinking: bool
    reasoning_format: str | ReasoningFormat | None
    system: str | None
    sampling: SamplingParams | None


@dataclass(frozen=True)
class GenerationRequest:
    """One fully checked request, ready to run."""

    prompt_tokens: list[int]
    controller: ReasoningController
    sampling: SamplingParams
    seed: int


class Model:
    """A loaded model with its reasoning format and sampling defaults."""

    def __init__(
        self, engine: Engine, *, reasoning_format: str | ReasoningFormat = "auto", engine_reason: str = "given"
    ) -> None:
        self.engine = engine
        self.engine_reason = engine_reason
        self.info: EngineInfo = engine.info
        self.family = family_for(self.info.model_name)
        self.reasoning_format = resolve_format(reasoning_format, self.info.chat_template, self.info.model_name)
        self.sampling = self.family.sampling
        self.prompts = PromptBuilder(engine.tokenize, engine.special_texts, self.info.chat_template)
        self._control_tokens: dict[str, ControlTokens] = {}
        self._lock = threading.Lock()
        self._active_cancel: threading.Event | None = None
        self._language_bans: dict[str, frozenset[int]] = {}
        self.memory_plan: MemoryPlan | None = None

    # -- requests --------------------------------------------------------------------

    def prompt_messages(self, prompt: Prompt, system: str | None = None) -> list[Message]:
        """The messages a prompt stands for, with the system prompt in front."""
        messages = [Message("user", prompt)] if isinstance(prompt, str) else as_messages(prompt)
        messages = as_messages(messages)
        if messages[0].role != "system":
            default = system if system is not None else self.family.system_prompt
            if default:
                messages.insert(0, Message("system", default))
        return messages

    def _tokens_for(self, fmt: ReasoningFormat) -> ControlTokens:
        tokens = self._control_tokens.get(fmt.name)
        if tokens is None:
            marker = self.engine.tokenize(fmt.close_marker, special=True) if fmt.close_marker else []
            tokens = self._control_tokens[fmt.name] = ControlTokens(
                close=tuple(self.engine.tokenize(fmt.forced_close_text, special=True)),
                skip=tuple(self.engine.tokenize(fmt.skip_text, special=True)),
                end_of_generation=self.engine.end_of_generation,
                wait=tuple(self.engine.tokenize(WAIT_TEXT, special=False)),
                nudge=tuple(self.engine.tokenize(NUDGE_TEXT, special=False)),
                close_token=marker[0] if len(marker) == 1 else None,
            )
        return tokens

    def language_ban(self, language: str) -> frozenset[int]:
        """Token ids outside ``language``'s scripts (computed once per language, then cached)."""
        ban = self._language_bans.get(language)
        if ban is None:
            ban = self._language_bans[language] = banned_tokens(self.engine.token_bytes, self.info.vocab_size, language)
        return ban

    def _language(self, language: str, messages: list[Message]) -> str | None:
        if language == "off":
            return None
        if language == "auto":
            return detect_language(messages[-1].content)
        if language not in LANGUAGE_SCRIPTS:
            raise InvalidRequestError(f"unknown language {language!r}; choose one of {', '.join(LANGUAGE_CHOICES)}")
        return language

    def _request(
        self, prompt: Prompt, options: ReasoningOptions, sampling_overrides: dict[str, Any]
    ) -> GenerationRequest:
        fmt = (
            self.reasoning_format
            if options.reasoning_format is None
            else resolve_format(options.reasoning_format, self.info.chat_template, self.info.model_name)
        )
        budget, minimum = apply_effort(
            options.effort, options.max_thinking_tokens, options.min_thinking_tokens, self.family.effort
        )
        limits = ThinkingLimits(budget, options.max_answer_tokens, options.think, minimum, options.loop_guard)
        params = (options.sampling or self.sampling).replace(**sampling_overrides)
        messages = self.prompt_messages(prompt, options.system)
        tokens = self.prompts.build(messages, fmt)
        control = self._tokens_for(fmt)
        language = self._language(options.language, messages)
        if language is not None:
            control = replace(
                control, language_ban=self.language_ban(language), language_in_thinking=options.language_in_thinking
            )
        # Room for the forced close and a short answer, so the guarantees can hold.
        needed = len(tokens) + (len(control.close) + ANSWER_RESERVE if fmt.thinks else 1)
        if needed > self.info.context_length:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens and needs {needed} with room to answer, but the context "
                f"holds {self.info.context_length}; shorten it or load the model with a larger context"
            )
        seed = params.seed if params.seed is not None else secrets.randbits(32)
        stats = GenerationStats(seed=seed)
        controller = ReasoningController(fmt, limits, control, stats)
        return GenerationRequest(tokens, controller, params, seed)

    def stream(
        self,
        prompt: Prompt,
        *,
        max_thinking_tokens: int | None = None,
        min_thinking_tokens: int | None = None,
        max_answer_tokens: int | None = None,
        effort: str | None = None,
        think: bool = True,
        loop_guard: bool = True,
        language: str = "off",
        language_in_thinking: bool = False,
        reasoning_format: str | ReasoningFormat | None = None,
        system: str | None = None,
        sampling: SamplingParams | None = None,
        **sampling_overrides: Any,
    ) -> Iterator[Event]:
        """Generate a reply, yielding ``ThinkingDelta``, ``AnswerDelta``,
        ``Intervention`` events and, last, ``Done``.

        ``prompt`` is a user message or a list of ``{"role", "content"}`` messages.
        ``max_thinking_tokens`` caps the thinking (the runtime then closes it and the
        model answers); ``min_thinking_tokens`` makes it think at least that long
        (an early close becomes "Wait"); ``effort`` (low, medium, high, max) sets both
        from a table, explicit numbers win. ``max_answer_tokens`` caps the answer;
        ``think=False`` skips the thinking; ``loop_guard`` nudges, then closes, a
        thinking that loops; ``language`` (``auto``, ``en``, ``zh``, …, ``off``) keeps
        the answer (and with ``language_in_thinking`` the thinking) in one language.
        Sampling fields (``temperature=…``, ``seed=…``) override the model's
        defaults. Bad arguments raise here, before anything runs.

        The model serves one stream at a time: iterate to ``Done``, or ``close()`` a
        stream you abandon earlier, so that the next request can start.
        """
        options = ReasoningOptions(
            max_thinking_tokens=max_thinking_tokens,
            min_thinking_tokens=min_thinking_tokens,
            max_answer_tokens=max_answer_tokens,
            effort=effort,
            think=think,
            loop_guard=loop_guard,
            language=language,
            language_in_thinking=language_in_thinking,
            reasoning_format=reasoning_format,
            system=system,
            sampling=sampling,
        )
        return self._run(self._request(prompt, options, sampling_overrides))

    def _run(self, request: GenerationRequest) -> Iterator[Event]:
        """Hold the model for the generation; ``Done`` comes after the lock is released,
        so a caller that stops at ``Done`` leaves the model free for the next request."""
        with self._lock:
            cancel = self._active_cancel = threading.Event()
            try:
                for event in generate_step(
                    self.engine,
                    request.prompt_tokens,
                    request.controller,
                    request.sampling,
                    request.seed,
                    cancel.is_set,
                ):
                    if isinstance(event, Done):
                        done = event
                        break
                    yield event
            finally:
                self._active_cancel = None
        yield done

    def generate(self, prompt: Prompt, **options: Any) -> GenerationResult:
        """``stream`` collected: the thinking, the answer and the stats."""
        return collect(self.stream(prompt, **options))

    def cancel(self) -> None:
        """Stop the running generation at its next token (safe from any thread)."""
        active = self._active_cancel
        if active is not None:
            active.set()

    def chat(self, system: str | None = None, **options: Any) -> Chat:
        """A multi-turn conversation; ``options`` apply to every turn."""
        from .chat import Chat

        return Chat(self, system=system, options=options)

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def load(
    path: str | Path,
    *,
    engine: str = "auto",
    context_length: int | None = None,
    kv_cache: str | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    reasoning_format: str | ReasoningFormat = "auto",
) -> Model:
    """Load a GGUF file or an MLX folder, picking its engine (``engine="auto"``).

    Before loading, the memory planner checks that the weights, the KV cache and an
    overhead fit this machine; ``context_length=None`` and ``kv_cache=None`` let it
    choose the longest context that fits (fp16 KV cache first, then 8-bit). A request
    that cannot fit raises ``InsufficientMemoryError`` naming what would.
    """
    if context_length is not None and context_length < 16:
        raise InvalidRequestError(f"context_length must be at least 16, got {context_length}")
    if kv_cache is not None and kv_cache not in KV_CACHE_TYPES:
        raise InvalidRequestError(f"unknown KV cache type {kv_cache!r}; choose one of {', '.join(KV_CACHE_TYPES)}")
    plan = plan_memory(model_shape(path), memory_budget(), context_length, kv_cache)
    loaded, reason = open_engine(
        path,
        engine,
        context_length=plan.context,
        kv_cache=plan.kv_cache,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
    )
    model = Model(loaded, reasoning_format=reasoning_format, engine_reason=reason)
    model.memory_plan = plan
    return model
