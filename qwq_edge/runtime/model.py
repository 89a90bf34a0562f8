"""The Python API: ``load`` a model, then ``generate``, ``stream`` or ``chat``.

Every model is shared the same way (``engines.scheduler``): its engine's pool hands a
sequence to each generation. With ``parallel=1`` one generation runs at a time and a
request from another thread waits for it (an abandoned stream is taken over after
``scheduler.stale_after`` seconds); with ``parallel=N`` up to N generations from as many
threads run at once, their tokens in one forward pass per step.
A stream's ``cancel()`` stops that generation at its next token; ``Model.cancel()``
stops every running one; the model stays usable.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from ..architecture.shape import ModelShape
from ..catalog.families import family_for
from ..catalog.planner import MemoryPlan, memory_budget, model_shape, plan_memory
from ..engines import open_engine
from ..engines.base import KV_CACHE_TYPES, Engine, EngineInfo, EnginePool
from ..engines.prompt_cache import PromptCache
from ..engines.registry import choose_engine, join_group, rank_shape, spec_named
from ..engines.scheduler import Claim, SoloPool
from ..errors import DistributedError, InvalidRequestError
from ..events import Done, Event, GenerationResult, GenerationStats, collect
from ..reasoning.controller import ReasoningController
from ..reasoning.factory import ControllerFactory
from ..reasoning.formats import NONE, ReasoningFormat, resolve_format, soft_switch
from ..reasoning.language import detect_language, resolve_language
from ..sampling import SamplingParams
from ..speculation.proposers import DraftModels, Proposer, WhileAlone
from ..system.distributed import launched
from .chat import Chat
from .fanout import MAX_CHOICES, Seat, SharedPrompt, fan_out
from .generate import generate_step
from .options import GenerationOptions
from .prompt import Message, PromptBuilder, as_messages
from .prompt_caching import attach_prompt_cache
from .stream import Stream
from .votes import counted

Prompt = str | Iterable[Message | dict[str, Any]]


class Model:
    """A loaded model with its reasoning format and sampling defaults."""

    def __init__(
        self,
        engine: Engine | EnginePool,
        *,
        reasoning_format: str | ReasoningFormat = "auto",
        engine_reason: str = "given",
    ) -> None:
        self.engine = engine
        self.engine_reason = engine_reason
        self.info: EngineInfo = engine.info
        self.family = family_for(self.info.model_name)
        self.reasoning_format = resolve_format(reasoning_format, self.info.chat_template, self.info.model_name)
        self.sampling: SamplingParams = self.family.sampling
        #: The defaults when the model answers without thinking (a hybrid model's card gives its own).
        self.sampling_no_think: SamplingParams = self.family.sampling_no_think or self.sampling
        self.prompts = PromptBuilder(engine.tokenize, engine.special_texts, self.info.chat_template)
        self.controllers = ControllerFactory(
            lambda text, special: engine.tokenize(text, special=special),
            engine.token_bytes,
            self.info.vocab_size,
            engine.end_of_generation,
        )
        #: The engine as a pool (an engine that does not batch is a pool of one) and its scheduler.
        self.pool: EnginePool = engine if hasattr(engine, "sequences") else SoloPool(engine)  # type: ignore[assignment]
        self.scheduler = self.pool.scheduler
        #: How many generations run at once (their passes batched when more than one).
        self.parallel = len(self.pool.sequences)
        self.memory_plan: MemoryPlan | None = None
        self.drafts = DraftModels(engine)  # type: ignore[arg-type]
        #: The cancel events of the generations under way, those still waiting for a sequence too.
        self._live: set[threading.Event] = set()

    @property
    def prompt_cache(self) -> PromptCache | None:
        """The prompt cache the engine keeps for every sequence, if it keeps one."""
        return getattr(self.pool, "prompt_cache", None)

    # -- requests --------------------------------------------------------------------

    def prompt_messages(self, prompt: Prompt, system: str | None = None) -> list[Message]:
        """The messages a prompt stands for, with the system prompt in front."""
        messages = as_messages([Message("user", prompt)] if isinstance(prompt, str) else prompt)
        if messages[0].role != "system":
            default = system if system is not None else self.family.system_prompt
            if default:
                messages.insert(0, Message("system", default))
        return messages

    def stream(self, prompt: Prompt, options: GenerationOptions | None = None, **overrides: Any) -> Stream:
        """Generate a reply, yielding ``ThinkingDelta``, ``AnswerDelta``,
        ``Intervention`` events and, last, ``Done``.

        ``prompt`` is a user message or a list of ``{"role", "content"}`` messages;
        ``options`` a ``GenerationOptions`` (default: the model's defaults), and
        ``overrides`` change its fields by name (``max_thinking_tokens=256``,
        ``temperature=0``, …). Bad arguments raise here, before anything runs.

        Iterate to ``Done``, or ``close()`` a stream you abandon earlier, so that
        the next request starts at once (an abandoned stream is taken over after
        ``scheduler.stale_after`` seconds).
        """
        return self.streams(prompt, 1, options, **overrides)[0]

    def streams(
        self, prompt: Prompt, count: int, options: GenerationOptions | None = None, **overrides: Any
    ) -> list[Stream]:
        """``count`` generations of one prompt (``stream``'s arguments), each with its own seed
        (``options.seed`` plus its index when one is given). The prompt is evaluated once: the
        others copy its KV state. Read them from as many threads (``runtime.fanout.fan_out``) for
        their tokens to share each pass; a model loaded with ``parallel`` below ``count`` runs
        that many at a time."""
        if not 1 <= count <= MAX_CHOICES:
            raise InvalidRequestError(f"the number of generations must be in [1, {MAX_CHOICES}], not {count}")
        options = (options or GenerationOptions()).replace(**overrides)
        fmt, options, messages, tokens = self._prompt(prompt, options)
        user_text = "\n".join(message.content for message in messages if message.role == "user")
        shared, last = SharedPrompt(), messages[-1].content
        return [
            self._start(tokens, fmt, _nth_seed(options, index), user_text, last, shared.seat(index == 0))
            for index in range(count)
        ]

    def prompt_tokens(self, prompt: Prompt, options: GenerationOptions | None = None, **overrides: Any) -> list[int]:
        """The token ids ``stream`` would evaluate for ``prompt`` (template, system prompt
        and opened thinking included): what the model is shown, to check or count."""
        return self._prompt(prompt, (options or GenerationOptions()).replace(**overrides))[3]

    def _prompt(
        self, prompt: Prompt, options: GenerationOptions
    ) -> tuple[ReasoningFormat, GenerationOptions, list[Message], list[int]]:
        """A request's format, its options with the thinking as the messages switch it (a
        format with a template switch honours ``/think`` and ``/no_think``), its messages and
        its prompt tokens."""
        fmt = self._format(options)
        messages = self.prompt_messages(prompt, options.system)
        if fmt.switch and options.think:
            switched = soft_switch(m.content for m in messages if m.role in ("system", "user"))
            options = options.replace(think=switched) if switched is not None else options
        return fmt, options, messages, self.prompts.build(messages, fmt, options.offered_tools(), options.think)

    def complete(
        self, prompt: str | Sequence[int], options: GenerationOptions | None = None, **overrides: Any
    ) -> Stream:
        """Continue a raw prompt: no chat template, no system prompt, no thinking opened
        (the reasoning format is ``none`` unless ``options`` names one).

        A string is plain text: any control token's text in it stays text. A list of
        token ids is evaluated as it is, which is how a caller asks for control tokens.
        """
        options = (options or GenerationOptions()).replace(**overrides)
        tokens = self.raw_prompt_tokens(prompt)
        text = prompt if isinstance(prompt, str) else ""
        return self._start(tokens, self._format(options, default=NONE), options, text, text)

    def raw_prompt_tokens(self, prompt: str | Sequence[int]) -> list[int]:
        """The token ids ``complete`` evaluates for ``prompt``."""
        tokens = self.prompts.tokenize_untrusted(prompt) if isinstance(prompt, str) else list(prompt)
        if not tokens or not all(isinstance(t, int) and 0 <= t < self.info.vocab_size for t in tokens):
            raise InvalidRequestError("the prompt must be non-empty text or a list of valid token ids")
        return tokens

    def _format(self, options: GenerationOptions, default: ReasoningFormat | None = None) -> ReasoningFormat:
        if options.reasoning_format in (None, "auto"):
            return default or self.reasoning_format
        return resolve_format(options.reasoning_format, self.info.chat_template, self.info.model_name)

    def default_sampling(self, fmt: ReasoningFormat, think: bool = True) -> SamplingParams:
        """The model's sampling defaults for a reply that thinks (``fmt`` thinks and ``think``) or not."""
        return self.sampling if fmt.thinks and think else self.sampling_no_think

    def _start(
        self,
        tokens: list[int],
        fmt: ReasoningFormat,
        options: GenerationOptions,
        user_text: str,
        last: str,
        seat: Seat | None = None,
    ) -> Stream:
        """Build the controller for one request (``user_text``: the user's words, which the
        language guard allows; ``last``: the message whose language the runtime's texts follow)."""
        controller = self.controllers.new(
            fmt,
            options.thinking_limits(self.family.effort),
            resolve_language(options.language, last),
            options.language_in_thinking,
            user_text,
            detect_language(last),  # the runtime's texts follow the user without a guard too
            options.answer_grammar(),
        )
        controller.check_room(len(tokens), self.info.context_length)
        sampling = options.sampling(self.default_sampling(fmt, options.think))
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(32)
        cancel = threading.Event()
        # In a pool, a generation drafts only while no other shares its passes.
        proposer = self.drafts.proposer(options.draft, tokens, sampling=sampling, seed=seed)
        if proposer is not None and self.parallel > 1:
            scheduler = self.scheduler
            proposer = WhileAlone(proposer, lambda: len(scheduler.active) <= 1)
        events = self._run(tokens, controller, sampling, seed, cancel, proposer, options.top_logprobs, seat)
        return Stream(events, cancel.set, controller.answer_now)

    def _run(
        self,
        tokens: list[int],
        controller: ReasoningController,
        sampling: SamplingParams,
        seed: int,
        cancel: threading.Event,
        proposer: Proposer | None = None,
        top_logprobs: int | None = None,
        seat: Seat | None = None,
    ) -> Iterator[Event]:
        """Own the model (or one sequence of its pool) for the generation, one step at a
        time; ``Done`` comes after it is given back, so a caller that stops at ``Done``
        leaves it free. ``seat``: its part in a prompt shared by several generations."""
        seat = seat or SharedPrompt().seat(first=True)
        claim = None
        self._live.add(cancel)
        try:
            seat.before_claim(cancel.is_set)
            if not cancel.is_set():
                claim = self.scheduler.claim(cancel, tokens)
            if claim is None or cancel.is_set():  # cancelled before it began: nothing to evaluate
                stats = GenerationStats(prompt_tokens=len(tokens), finish_reason="cancelled", seed=seed)
                event: Event = Done(GenerationResult("", "", stats))
            else:
                seat.after_claim(claim.engine, tokens)
                steps = generate_step(
                    claim.engine,
                    tokens,
                    controller,
                    sampling,
                    seed,
                    cancel.is_set,
                    proposer,
                    top_logprobs,
                    lambda: seat.evaluated(claim.engine),
                )
                while not isinstance(event := self._step(claim, steps), Done):
                    yield event
        finally:
            seat.leaving()
            if claim is not None:
                self.scheduler.release(claim)
            self._live.discard(cancel)
        yield event

    def _step(self, claim: Claim, steps: Iterator[Event]) -> Event:
        """The generation's next event, computed while it counts as stepping."""
        with self.scheduler.step(claim):
            return next(steps)

    def generate(
        self, prompt: Prompt, options: GenerationOptions | None = None, votes: int = 1, **overrides: Any
    ) -> GenerationResult:
        """``stream`` collected: the thinking, the answer and the stats. ``votes=K`` (up to 8):
        K thoughts of the prompt, the majority of their final answers (a ``VoteResult``: the
        chosen thought's thinking and answer, the tally, every thought); load the model with
        ``parallel=K`` for them to run together."""
        if votes == 1:
            return collect(self.stream(prompt, options, **overrides))
        return collect(self.vote(prompt, votes, options, **overrides))

    def vote(self, prompt: Prompt, count: int, options: GenerationOptions | None = None, **overrides: Any) -> Stream:
        """``count`` thoughts of the prompt at once (``streams``), their events as ``ChoiceEvent``s
        as they come; the last ``Done`` carries the ``VoteResult``."""
        options = (options or GenerationOptions()).replace(**overrides)
        asked = options.top_logprobs is not None
        if not asked:  # a tie goes to the highest mean log-probability
            options = options.replace(top_logprobs=0)
        stream = fan_out(self.streams(prompt, count, options))
        return stream.around(counted(stream, perf_counter(), asked))

    def cancel(self) -> None:
        """Stop every generation under way at its next token, and those still waiting for a
        sequence before they begin (safe from any thread); a stream's own ``cancel()`` stops that one only."""
        for cancel in list(self._live):
            cancel.set()

    def chat(self, options: GenerationOptions | None = None, **overrides: Any) -> Chat:
        """A multi-turn conversation; its options apply to every turn."""
        return Chat(self, options, **overrides)

    # -- distributed runs --------------------------------------------------------------

    @property
    def rank(self) -> int:
        """This process's rank in a distributed run; 0 (the one that generates) otherwise."""
        return int(getattr(self.engine, "rank", 0))

    def follow(self) -> None:
        """On a rank other than 0: run rank 0's operations on this rank's share until it stops."""
        follow = getattr(self.engine, "follow", None)
        if follow is None:
            raise DistributedError("only a rank other than 0 of a distributed run follows")
        follow()

    def rank_reports(self) -> list[dict[str, Any]] | None:
        """In a distributed run, every rank's memory and decode speed (None otherwise)."""
        reports = getattr(self.engine, "reports", None)
        return reports() if reports is not None else None

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        self.scheduler.close()
        self.drafts.close()
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
    distributed: bool = False,
    rank_timeout: float = 60.0,
    parallel: int = 1,
    cache_ram: int | None = None,
    prompt_cache_dir: str | Path | None = None,
    disk_cache: bool = True,
    reserved_bytes: int = 0,
) -> Model:
    """Load a GGUF file or an MLX folder, picking its engine (``engine="auto"``).

    ``distributed``: under ``mlx.launch``, split an MLX model over the ranks (planned per
    rank); rank 0 generates, the others call ``follow()``; a rank silent for
    ``rank_timeout`` seconds, or dead, ends the process with one line and status 1.
    ``parallel``: how many generations run at once (from as many threads), batched in one
    forward pass per step (both engines); ``context_length`` is each one's.
    The memory planner first checks that weights, KV cache and overhead fit this machine;
    ``context_length=None`` and ``kv_cache=None`` let it choose the longest context that
    fits (fp16 KV first, then 8-bit); what cannot fit raises ``InsufficientMemoryError``.
    ``cache_ram``: bytes of recent prompts' KV states kept in memory for any sequence to
    start from (None: a quarter of what the plan leaves free; 0: none); long prompts are
    also kept on disk under ``prompt_cache_dir`` (default: ``QWQ_EDGE_HOME``'s
    ``prompt-cache``) unless ``disk_cache`` is False (engines that can save a sequence's
    state: llama.cpp). ``reserved_bytes``: memory that models already loaded in this process
    hold, which the planner counts as taken.
    """
    plan = plan_load(
        path,
        engine=engine,
        context_length=context_length,
        kv_cache=kv_cache,
        parallel=parallel,
        distributed=distributed,
        reserved_bytes=reserved_bytes,
    )
    loaded, reason = open_engine(
        path,
        engine,
        context_length=plan.context,
        kv_cache=plan.kv_cache,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        distributed=distributed,
        rank_timeout=rank_timeout,
        parallel=plan.parallel,
    )
    plan = attach_prompt_cache(loaded, plan, cache_ram, prompt_cache_dir if disk_cache else False)
    model = Model(loaded, reasoning_format=reasoning_format, engine_reason=reason)
    model.memory_plan = plan
    return model


def _nth_seed(options: GenerationOptions, index: int) -> GenerationOptions:
    """The options of the ``index``-th of several generations: a given seed plus ``index``."""
    if options.seed is None or index == 0:
        return options
    return options.replace(seed=(options.seed + index) % 2**64)


def plan_load(
    path: str | Path,
    *,
    engine: str = "auto",
    context_length: int | None = None,
    kv_cache: str | None = None,
    parallel: int = 1,
    distributed: bool = False,
    reserved_bytes: int = 0,
) -> MemoryPlan:
    """The memory plan ``load`` would load ``path`` with (the options as ``load`` takes them),
    without loading it; raises ``InsufficientMemoryError`` where it cannot fit."""
    if context_length is not None and context_length < 16:
        raise InvalidRequestError(f"context_length must be at least 16, got {context_length}")
    if kv_cache is not None and kv_cache not in KV_CACHE_TYPES:
        raise InvalidRequestError(f"unknown KV cache type {kv_cache!r}; choose one of {', '.join(KV_CACHE_TYPES)}")
    if parallel < 1:
        raise InvalidRequestError(f"parallel must be at least 1, got {parallel}")
    if parallel > 1 and distributed:
        raise DistributedError("a distributed run serves one generation at a time: drop --parallel or --distributed")
    shape = _shape(path, distributed)
    spec = spec_named(choose_engine(Path(path), engine)[0])
    batched = parallel if spec.batches else 1
    if batched > 1 and kv_cache is None:
        kv_cache = spec.batch_kv_cache
    return plan_memory(shape, memory_budget(reserved_bytes), context_length, kv_cache, batched)


def _shape(path: str | Path, distributed: bool) -> ModelShape:
    """What one process must hold: the whole model, or its rank's share."""
    if not distributed:
        return model_shape(path)
    if not launched():
        raise DistributedError(
            "--distributed runs under mlx.launch, one process per rank: start it with qwq-edge launch (see --help)"
        )
    return rank_shape(path, join_group()[1])
