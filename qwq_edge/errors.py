"""The library's own exception types.

Every error a user can cause (bad file, bad option, prompt too long) is a
``QwqEdgeError``; the CLI turns it into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class QwqEdgeError(Exception):
    """Base class for every error qwq-edge raises on purpose."""


class ModelNotFoundError(QwqEdgeError):
    """The model path does not exist."""


class ModelFormatError(QwqEdgeError):
    """The model file exists but is not a usable model (not GGUF, truncated, corrupt)."""


class EngineUnavailableError(QwqEdgeError):
    """The requested engine cannot be imported or cannot run this model."""


class InvalidRequestError(QwqEdgeError):
    """A generation request is malformed (empty prompt, negative budget, …)."""


class ContextOverflowError(InvalidRequestError):
    """The prompt does not fit in the model's context window."""


class ChatFileError(QwqEdgeError):
    """A saved conversation cannot be read or written."""


class CheckpointError(QwqEdgeError):
    """A checkpoint is missing a file, or a file is corrupt or of an unsupported kind."""


class HubError(QwqEdgeError):
    """A hub repository id is malformed, or its download failed or cannot be reached."""


class ConversionError(QwqEdgeError):
    """A conversion cannot start or cannot finish (output exists, disk full, verification failed)."""


class InsufficientMemoryError(QwqEdgeError):
    """The model (with the requested context and KV cache) does not fit in memory."""


class QwqEdgeWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI shows it as one line."""


class TemplateFallbackWarning(QwqEdgeWarning):
    """The model's chat template cannot be used, so ChatML is used instead."""


class DistributedError(QwqEdgeError):
    """A distributed run cannot start (not under ``mlx.launch``, a model that cannot be
    split over this many ranks, ranks that disagree) or lost one of its ranks."""


class ServiceError(QwqEdgeError):
    """``qwq-edge service`` cannot do what it was asked: a platform without systemd or launchd,
    a command line the unit cannot hold, or ``systemctl`` / ``launchctl`` refused."""
