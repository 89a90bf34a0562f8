"""Chat templates (Jinja, from a model's files) rendered within a bound on time and size.

A template is code from the model file, so a bad or hostile one must not hang the
process or fill its memory. Three guards, each for what the others cannot see:

* time: a trace function, set only while rendering and active only in the
  template's own frames, stops a render that runs past ``MAX_SECONDS`` (Jinja
  compiles a template to Python, so every loop, macro and recursion passes through
  it; no other hook sees an empty loop body);
* size before allocating: single operations that can build a huge value in one
  step of C code (``*``, ``**``, ``+``, ``%``, ``~``, and calls or filters given a
  huge width or two large texts) are checked in the sandbox's own hooks before
  they run, since a trace function cannot interrupt one C call;
* size of the output: rendered text is consumed piece by piece and stopped past
  ``MAX_CHARS``.

Every failure (these bounds, a syntax error, what the sandbox blocks, what the
template raises) is a ``TemplateProblem`` with one line naming the problem.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache, wraps
from time import perf_counter
from types import FrameType
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

from ..errors import QwqEdgeError

#: Longest a render may take; a real chat template renders in milliseconds.
MAX_SECONDS = 1.0
#: Longest text a template (or any value inside it) may build; a template's own text is short.
MAX_CHARS = 1_000_000
#: Largest integer a template may compute (prompt text needs no big numbers).
MAX_INT_BITS = 4096
_FILENAME = "<chat template>"
_BIG_WIDTH = re.compile(r"\d{7,}")

#: The plain ChatML template (Qwen's form without tools): the fallback for a model file without one.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TemplateProblem(QwqEdgeError):
    """A chat template cannot be rendered; the message names why, in one line."""


class TemplateRaised(TemplateError):
    """The template's own ``raise_exception``: it refuses this conversation."""


def _too_big(what: str) -> TemplateProblem:
    return TemplateProblem(f"it builds {what} (the limit is {MAX_CHARS:,} characters)")


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple | dict) else None


def check_arguments(*values: Any) -> None:
    """Refuse a call whose arguments could make a huge value in one C call: a number over
    ``MAX_CHARS``, a format string with a huge width, or, when a text is involved, two
    sizes whose product is over ``MAX_CHARS`` (``replace``, ``join``, ``indent``, ``ljust``)."""
    sizes, has_text = [], False
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_CHARS:
            raise TemplateProblem(f"it asks for a size of {value:,} (the limit is {MAX_CHARS:,})")
        if isinstance(value, str) and _BIG_WIDTH.search(value) and ("%" in value or "{" in value):
            raise _too_big("a text with a huge format width")
        has_text = has_text or isinstance(value, str)
        size = abs(value) if isinstance(value, int) else _sized(value)
        if size is not None:
            sizes.append(size)
    sizes.sort()
    if has_text and len(sizes) >= 2 and sizes[-1] * sizes[-2] > MAX_CHARS:
        raise _too_big(f"a text from sizes {sizes[-2]:,} and {sizes[-1]:,}")


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``*``, ``**``, ``+`` or ``%`` when the result would be huge."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if _sized(seq) is not None and isinstance(count, int) and len(seq) * count > MAX_CHARS:
                raise _too_big(f"a value of {len(seq) * count:,} items by repetition")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateProblem("it computes a number too large for a prompt")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() * max(right, 0) > MAX_INT_BITS:
            raise TemplateProblem("it computes a number too large for a prompt")
    elif operator == "+":
        if _sized(left) is not None and _sized(right) is not None and len(left) + len(right) > MAX_CHARS:
            raise _too_big(f"a value of {len(left) + len(right):,} items")
    elif operator == "%" and isinstance(left, str):
        check_arguments(left, *(right if isinstance(right, tuple) else (right,)))


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` (string concatenation) checked for size."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(function)  # keeps jinja's pass_context / pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_arguments(*args, *kwargs.values())
        return function(*args, **kwargs)

    return bounded


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with sizes checked before operations that can build huge values."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt)[:100])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        receiver = getattr(__obj, "__self__", None) or getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        check_arguments(*args, *kwargs.values(), *([receiver] if isinstance(receiver, str | list) else []))
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def bounded_concat(values: tuple[Any, ...]) -> str:
        pieces = [str(value) for value in values]
        total = sum(len(piece) for piece in pieces)
        if total > MAX_CHARS:
            raise _too_big(f"a text of {total:,} characters")
        return "".join(pieces)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Stop template code that runs past ``seconds`` (checked on each line it runs)."""
    end = perf_counter() + seconds

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if perf_counter() > end:
            raise TemplateProblem(f"it runs longer than {seconds:g} s")
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == _FILENAME else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield
    finally:
        sys.settrace(previous)


@lru_cache(maxsize=16)
def _compile(source: str) -> Template:
    """A chat template compiled once (compiling takes milliseconds; every request renders one)."""
    if len(source) > MAX_CHARS:
        raise TemplateProblem(f"it is {len(source):,} characters long (the limit is {MAX_CHARS:,})")
    environment = BoundedEnvironment()
    return environment.template_class.from_code(
        environment, environment.compile(source, filename=_FILENAME), environment.make_globals(None)
    )


def _render(source: str, variables: dict[str, Any]) -> str:
    pieces, total = [], 0
    with _deadline(MAX_SECONDS):
        for piece in _compile(source).generate(**variables):
            total += len(piece)
            if total > MAX_CHARS:
                raise _too_big(f"more than {MAX_CHARS:,} characters of prompt")
            pieces.append(piece)
    return "".join(pieces)


def one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _explain(error: BaseException) -> str:
    if isinstance(error, TemplateSyntaxError):
        return f"syntax error on line {error.lineno}: {one_line(error.message)}"
    if isinstance(error, SecurityError):
        return f"the sandbox blocked it: {one_line(error)}"
    if isinstance(error, TemplateRaised):
        return f"it refused the conversation: {one_line(error)}"
    if isinstance(error, RecursionError):
        return "it recurses too deeply"
    if isinstance(error, MemoryError):
        return "it needs too much memory"
    if isinstance(error, OverflowError) and "MAX_RANGE" in str(error):
        return f"it asks for a range of more than {MAX_RANGE:,} items"
    return one_line(f"{type(error).__name__}: {error}")


def render_template(source: str, **variables: Any) -> str:
    """Render a chat template within the bounds; any failure is a one-line ``TemplateProblem``."""
    try:
        return _render(source, variables)
    except TemplateProblem:
        raise
    except Exception as error:  # whatever the template's code raised: name it
        raise TemplateProblem(_explain(error)) from None
