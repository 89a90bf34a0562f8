"""Controllers for one loaded model: the format's texts tokenized once, language bans once.

``Model`` asks for one controller per request and knows nothing of what is inside:
the forced texts, their token ids, the masks and the room rule all live here and
in ``controller``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .controller import NUDGE_TEXT, WAIT_TEXT, ControlTokens, ReasoningController, ThinkingLimits
from .formats import ReasoningFormat
from .language import banned_tokens

Tokenize = Callable[[str, bool], list[int]]


class ControllerFactory:
    """Builds ``ReasoningController``s for one vocabulary.

    ``tokenize(text, special)`` and ``token_bytes(id)`` are the model's;
    ``end_of_generation`` the ids that end a reply.
    """

    def __init__(
        self,
        tokenize: Tokenize,
        token_bytes: Callable[[int], bytes],
        vocab_size: int,
        end_of_generation: frozenset[int],
    ) -> None:
        self._tokenize = tokenize
        self._token_bytes = token_bytes
        self._vocab_size = vocab_size
        self._end_of_generation = end_of_generation
        self._control_tokens: dict[str, ControlTokens] = {}
        self._language_bans: dict[str, frozenset[int]] = {}

    def new(
        self, fmt: ReasoningFormat, limits: ThinkingLimits, language: str = "off", language_in_thinking: bool = False
    ) -> ReasoningController:
        """A controller for one request. ``language`` is a code from ``LANGUAGE_SCRIPTS``
        or ``off`` (``resolve_language`` turns ``auto`` into a code)."""
        tokens = self.control_tokens(fmt)
        if language != "off":
            ban = self.language_ban(language)
            tokens = replace(tokens, language_ban=ban, language_in_thinking=language_in_thinking)
        return ReasoningController(fmt, limits, tokens, self._plain_tokens)

    def control_tokens(self, fmt: ReasoningFormat) -> ControlTokens:
        """The format's forced texts as token ids (computed once per format)."""
        tokens = self._control_tokens.get(fmt.name)
        if tokens is None:
            marker = self._tokenize(fmt.close_marker, True) if fmt.close_marker else []
            tokens = self._control_tokens[fmt.name] = ControlTokens(
                close=tuple(self._tokenize(fmt.forced_close_text, True)),
                skip=tuple(self._tokenize(fmt.skip_text, True)),
                end_of_generation=self._end_of_generation,
                wait=self._plain_tokens(WAIT_TEXT),
                nudge=self._plain_tokens(NUDGE_TEXT),
                close_token=marker[0] if len(marker) == 1 else None,
            )
        return tokens

    def language_ban(self, language: str) -> frozenset[int]:
        """Token ids outside ``language``'s scripts (computed once per language, then cached)."""
        ban = self._language_bans.get(language)
        if ban is None:
            ban = self._language_bans[language] = banned_tokens(self._token_bytes, self._vocab_size, language)
        return ban

    def _plain_tokens(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenize(text, False))
