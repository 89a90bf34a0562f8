"""Notices for a caller whose request asks for something the model will not do.

A model whose reasoning format is ``none`` never thinks, so a thinking budget, a
minimum or an effort does nothing; the runtime accepts them (a request stays valid
for any model), and these functions give the one line that says so and how to turn
the thinking on. The CLI prints it; the server can return it with the reply.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..reasoning.formats import FORMATS, ReasoningFormat
from .options import GenerationOptions

#: The options that only steer a thinking (a value that is 0, ``False`` or ``None`` asks for none).
THINKING_CONTROLS = ("max_thinking_tokens", "min_thinking_tokens", "effort", "language_in_thinking")
#: How an API caller turns the thinking on.
API_TURN_ON = 'set reasoning_format to "think" (or "qwq-preview")'


def requested_format(model_format: ReasoningFormat, options: GenerationOptions) -> ReasoningFormat:
    """The format a request runs with: its own ``reasoning_format``, else the model's."""
    if options.reasoning_format in (None, "auto"):
        return model_format
    return FORMATS[options.reasoning_format]


def no_thinking_notice(fmt: ReasoningFormat, ignored: str, turn_on: str = API_TURN_ON) -> str | None:
    """``this model does not think … so it ignores IGNORED; if it can think, TURN_ON``; ``None`` if it thinks."""
    if fmt.thinks:
        return None
    return (
        f"this model does not think (reasoning format {fmt.name}), so it ignores {ignored}; if it can think, {turn_on}"
    )


def thinking_controls_ignored(
    fmt: ReasoningFormat,
    options: GenerationOptions,
    names: Mapping[str, str] | None = None,
    turn_on: str = API_TURN_ON,
) -> str | None:
    """The notice for the thinking controls ``options`` sets that ``fmt`` ignores (``None``: none).

    ``names``: what the caller calls each option (``{"effort": "reasoning_effort"}``); by default its field name.
    """
    names = names or {}
    ignored = [names.get(name, name) for name in THINKING_CONTROLS if getattr(options, name)]
    if not ignored:
        return None
    listed = ", ".join(ignored[:-1]) + " and " + ignored[-1] if len(ignored) > 1 else ignored[0]
    return no_thinking_notice(fmt, listed, turn_on)
