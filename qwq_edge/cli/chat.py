"""``qwq-edge chat``: an interactive conversation in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..errors import ChatFileError, QwqEdgeError
from ..files import check_writable
from ..reasoning.effort import EFFORTS
from ..reasoning.language import LANGUAGE_CHOICES
from ..runtime.chat import Chat
from ..runtime.notices import no_thinking_notice, requested_format
from .interrupt import answer_now_on_interrupt
from .options import (
    display_options,
    generation_changes,
    generation_options,
    model_options,
    options_from_params,
)
from .remote import open_model, server_options
from .render import EventRenderer, thinking_flags_notice

HELP = """\
/budget N | /budget off   set or remove the thinking budget (tokens)
/min N | /min off         think at least N tokens (an earlier close becomes "Wait")
/effort LEVEL | off        preset budget and minimum: minimal, low, medium, high, max
/language auto|en|zh|…|off        keep the answer in one language
/loop on | off            the loop breaker
/think on|off|hide|summary  show the thinking, answer without it, a spinner, or a summary
/clear                    forget the conversation
/save FILE                save the conversation (continue it later with --resume FILE)
/help                     this list
/exit                     leave (Ctrl-D or Ctrl-C at the prompt work too)
Ctrl-C while the model thinks: answer now (a second Ctrl-C stops); while it answers: stop
that answer. The conversation stays."""

THINK_MODES = ("on", "off", "hide", "summary")
#: How a chat's thinking is turned on, for the notice that its model does not think.
TURN_ON = "start the chat with --reasoning-format think"
DISPLAY_FOR_MODE = {"on": "show", "hide": "hide", "summary": "summary", "off": "show"}


class ChatRepl:
    """The read-eval-print loop around a ``Chat``."""

    def __init__(self, session: Chat, console: Console, think_mode: str, resume: Path | None) -> None:
        self.session = session
        self.console = console
        self.think_mode = think_mode
        self.resume = resume
        self.told_no_thinking = False

    def banner(self) -> None:
        model = self.session.model
        budget = self.session.effective_options.max_thinking_tokens
        self.console.print(
            f"qwq-edge chat · {model.info.model_name} · {model.info.engine} on {model.info.device} · "
            f"reasoning {model.reasoning_format.name} · budget {budget if budget is not None else 'off'} · "
            f"thinking {self.think_mode}",
            style="bold",
            highlight=False,
        )
        if self.session.history:
            self.console.print(f"resumed {len(self.session.history)} messages", style="dim")
        self.console.print("Type /help for commands.", style="dim")
        self._tell_no_thinking(thinking_flags_notice(model.reasoning_format, self.session.effective_options, TURN_ON))

    def loop(self) -> None:
        self.banner()
        unanswered = self.session.unanswered
        if unanswered is not None:
            self._say("the last question had no answer when the chat stopped; answering it now")
            self.turn(unanswered)
        while True:
            try:
                line = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not self.command(text):
                    break
                continue
            self.turn(line)
        self.autosave()

    def turn(self, text: str) -> None:
        """Answer ``text``; the question is saved before the model starts, the answer after."""
        try:
            events = self.session.stream(text)
            self.autosave()
            with answer_now_on_interrupt(events) as interrupt:
                renderer = EventRenderer(self.console, display=DISPLAY_FOR_MODE[self.think_mode])
                renderer.render(events, lambda: interrupt.answering)
        except QwqEdgeError as error:
            self._say(f"error: {error}", "red")
        self.autosave()

    def autosave(self) -> None:
        if self.resume is not None:
            self.session.save(self.resume)

    def command(self, text: str) -> bool:
        """Run a slash command; return ``False`` to leave the chat."""
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        handler = {
            "/help": self._help,
            "/budget": self._budget,
            "/min": self._minimum,
            "/effort": self._effort,
            "/language": self._language,
            "/loop": self._loop,
            "/think": self._think,
            "/clear": self._clear,
            "/save": self._save,
        }.get(name)
        if handler is None:
            self._say(f"unknown command {name}; /help lists them", "red")
        else:
            handler(argument)
        return True

    def _tell_no_thinking(self, notice: str | None) -> None:
        """Say ``notice`` (that the model does not think) once per session."""
        if notice and not self.told_no_thinking:
            self._say(notice, "yellow")
            self.told_no_thinking = True

    def _mind_thinking_control(self, command: str) -> None:
        """After ``command`` set a thinking control: say (once) if the model does not think."""
        fmt = requested_format(self.session.model.reasoning_format, self.session.effective_options)
        self._tell_no_thinking(no_thinking_notice(fmt, command, TURN_ON))

    def _say(self, message: str, style: str = "dim") -> None:
        self.console.print(message, style=style, markup=False, highlight=False)

    def _set(self, message: str, **changes: Any) -> bool:
        """Change the conversation's options; say ``message``, or why the change is refused."""
        try:
            self.session.set(**changes)
        except QwqEdgeError as error:
            self._say(f"error: {error}", "red")
            return False
        self._say(message)
        return True

    def _help(self, _: str) -> None:
        self._say(HELP, "")

    def _budget(self, argument: str) -> None:
        self._number_or_off("max_thinking_tokens", argument, "thinking budget", "/budget")

    def _number_or_off(self, key: str, argument: str, label: str, command: str) -> None:
        if argument == "off":
            self._set(f"{label} off", **{key: None})
        elif argument.isdigit():
            if self._set(f"{label} {int(argument)} tokens", **{key: int(argument)}) and int(argument):
                self._mind_thinking_control(command)
        else:
            self._say(f"usage: {command} N (a whole number >= 0) or {command} off", "red")

    def _minimum(self, argument: str) -> None:
        self._number_or_off("min_thinking_tokens", argument, "minimum thinking", "/min")

    def _choice(self, key: str, argument: str, choices: tuple[str, ...], off: object) -> bool:
        """Set ``key`` to ``argument`` (``off``'s value for "off"); whether it was set."""
        if argument not in choices:
            self._say(f"usage: /{key} {' | '.join(choices)}", "red")
            return False
        return self._set(f"{key} {argument}", **{key: off if argument == "off" else argument})

    def _effort(self, argument: str) -> None:
        if self._choice("effort", argument, (*EFFORTS, "off"), None) and argument != "off":
            self._mind_thinking_control("/effort")

    def _language(self, argument: str) -> None:
        self._choice("language", argument, LANGUAGE_CHOICES, "off")

    def _loop(self, argument: str) -> None:
        if argument not in ("on", "off"):
            self._say("usage: /loop on | off", "red")
            return
        self._set(f"loop breaker {argument}", loop_guard=argument == "on")

    def _think(self, argument: str) -> None:
        if argument not in THINK_MODES:
            self._say("usage: /think on | off | hide", "red")
            return
        if self._set(f"thinking {argument}", think=argument != "off"):
            self.think_mode = argument
            if argument != "off":
                self._mind_thinking_control("/think")

    def _clear(self, _: str) -> None:
        self.session.clear()
        self._say("conversation cleared")

    def _save(self, argument: str) -> None:
        if not argument:
            self._say("usage: /save FILE", "red")
            return
        try:
            self.session.save(argument)
        except QwqEdgeError as error:
            self._say(f"error: {error}", "red")
            return
        self._say(f"saved {len(self.session.history)} messages to {argument}")


@click.command()
@model_options
@server_options
@generation_options
@display_options
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Continue the chat saved in FILE (created if missing) and save every turn to it.",
)
def chat(thinking_display: str, resume: Path | None, **params: Any) -> None:
    """Chat with a model in the terminal."""
    if resume is not None:
        _check_resume_path(resume)
    model = open_model(params)
    if resume is not None and resume.exists():
        session = Chat.load(model, resume, **generation_changes(params, given_only=True))
    else:
        session = Chat(model, options_from_params(params, model))
    think_mode = {"show": "on", "hide": "hide", "summary": "summary"}[thinking_display]
    if not session.effective_options.think:
        think_mode = "off"
    ChatRepl(session, Console(highlight=False), think_mode, resume).loop()


def _check_resume_path(path: Path) -> None:
    """Find out now, not after the first answer, that the chat could not be saved."""
    try:
        check_writable(path)
    except OSError as error:
        raise ChatFileError(f"cannot save the chat to {path}: {error.strerror or error}") from None
