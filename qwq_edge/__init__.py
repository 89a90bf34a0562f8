"""qwq-edge: run QwQ-class reasoning models locally, with control over how long they think."""

from .catalog.fits import Candidate, plan_catalog
from .errors import (
    ChatFileError,
    ContextOverflowError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelFormatError,
    ModelNotFoundError,
    QwqEdgeError,
)
from .events import (
    AnswerDelta,
    ChoiceEvent,
    Choices,
    Done,
    Event,
    GenerationResult,
    GenerationStats,
    Intervention,
    ThinkingDelta,
)
from .reasoning.formats import FORMATS, ReasoningFormat
from .runtime.chat import Chat
from .runtime.model import Model, load
from .runtime.options import GenerationOptions
from .runtime.prompt import Message
from .runtime.votes import VoteResult
from .sampling import SamplingParams

__version__ = "0.1.0"

__all__ = [
    "FORMATS",
    "AnswerDelta",
    "Candidate",
    "Chat",
    "ChatFileError",
    "ChoiceEvent",
    "Choices",
    "ContextOverflowError",
    "Done",
    "EngineUnavailableError",
    "Event",
    "GenerationOptions",
    "GenerationResult",
    "GenerationStats",
    "Intervention",
    "InvalidRequestError",
    "Message",
    "Model",
    "ModelFormatError",
    "ModelNotFoundError",
    "QwqEdgeError",
    "ReasoningFormat",
    "SamplingParams",
    "ThinkingDelta",
    "VoteResult",
    "load",
    "plan_catalog",
]
