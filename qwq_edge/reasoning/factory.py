"""Controllers for one loaded model: the format's texts tokenized once, language bans once.

``Model`` asks for one controller per request and knows nothing of what is inside:
the forced texts (in the guarded language), their token ids, the masks and the room
rule all live here and in ``controller``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .controller import ControlTokens, ReasoningController, ThinkingLimits
from .formats import ReasoningFormat
from .grammar import GrammarVocabulary
from .language import LanguageBans, language_bans, user_terms
from .texts import RuntimeTexts, texts_for

Tokenize = Callable[[str, bool], list[int]]


class ControllerFactory:
    """Builds ``ReasoningController``s for one vocabulary.

    ``tokenize(text, special)`` and ``token_bytes(id)`` are the model's;
    ``end_of_generation`` the ids that end a reply; ``texts`` gives the runtime's
    forced sentences for a language (a benchmark can try other wordings).
    """

    def __init__(
        self,
        tokenize: Tokenize,
        token_bytes: Callable[[int], bytes],
        vocab_size: int,
        end_of_generation: frozenset[int],
        texts: Callable[[str], RuntimeTexts] = texts_for,
    ) -> None:
        self._tokenize = tokenize
        self._token_bytes = token_bytes
        self._vocab_size = vocab_size
        self._end_of_generation = end_of_generation
        self._texts = texts
        self._control_tokens: dict[tuple[str, str], ControlTokens] = {}
        self._language_bans: dict[str, LanguageBans] = {}
        self.grammars = GrammarVocabulary(
            token_bytes, lambda text: tokenize(text, False), vocab_size, end_of_generation
        )

    def new(
        self,
        fmt: ReasoningFormat,
        limits: ThinkingLimits,
        language: str = "off",
        language_in_thinking: bool = False,
        user_text: str = "",
        texts_language: str | None = None,
        grammar: str | None = None,
    ) -> ReasoningController:
        """A controller for one request. ``language`` is a code from ``LANGUAGE_SCRIPTS``
        or ``off`` (``resolve_language`` turns ``auto`` into a code); ``user_text``, the
        user's messages, whose words the language guard lets through; ``texts_language``,
        the language of the runtime's forced texts when no guard sets it; ``grammar``, an
        llguidance grammar the answer follows (``reasoning.grammar``)."""
        tokens = self.control_tokens(fmt, language if language != "off" else texts_language or "en")
        if language != "off":
            bans = self.language_bans(language).allowing(self._term_tokens(user_text))
            tokens = replace(
                tokens, language_ban=bans.prose, code_ban=bans.code, language_in_thinking=language_in_thinking
            )
        matcher = self.grammars.matcher(grammar) if grammar is not None else None
        return ReasoningController(fmt, limits, tokens, self._plain_tokens, grammar=matcher)

    def control_tokens(self, fmt: ReasoningFormat, language: str = "en") -> ControlTokens:
        """The format's forced texts, in ``language``, as token ids (computed once per format and language)."""
        key = (fmt.name, language)
        tokens = self._control_tokens.get(key)
        if tokens is None:
            texts = self._texts(language)
            marker = self._tokenize(fmt.close_marker, True) if fmt.close_marker else []
            tokens = self._control_tokens[key] = ControlTokens(
                close=tuple(self._tokenize(fmt.forced_close(texts.wrap_up), True)),
                skip=tuple(self._tokenize(fmt.skip_text, True)),
                end_of_generation=self._end_of_generation,
                wait=self._plain_tokens(texts.wait),
                nudge=self._plain_tokens(texts.nudge),
                close_token=marker[0] if len(marker) == 1 else None,
                wait_text=texts.wait,
            )
        return tokens

    def language_bans(self, language: str) -> LanguageBans:
        """Token ids outside ``language``'s scripts, in prose and in code (computed once per language)."""
        bans = self._language_bans.get(language)
        if bans is None:
            bans = self._language_bans[language] = language_bans(self._token_bytes, self._vocab_size, language)
        return bans

    def language_ban(self, language: str) -> frozenset[int]:
        """The ids the guard masks in prose for ``language``."""
        return self.language_bans(language).prose

    def _term_tokens(self, user_text: str) -> frozenset[int]:
        """The ids that spell the user's words, alone or after a space."""
        ids: set[int] = set()
        for term in user_terms(user_text):
            ids.update(self._plain_tokens(term))
            ids.update(self._plain_tokens(f" {term}"))
        return frozenset(ids)

    def _plain_tokens(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenize(text, False))
