"""Converters: Hugging Face checkpoints ⇄ GGUF and → MLX, streaming, verified against the source."""

from .api import convert_to_gguf, convert_to_hf, convert_to_mlx
from .output import ConversionSummary
from .verify import VerifyReport, verify

__all__ = ["ConversionSummary", "VerifyReport", "convert_to_gguf", "convert_to_hf", "convert_to_mlx", "verify"]
