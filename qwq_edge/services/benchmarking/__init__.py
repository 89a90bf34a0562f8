"""Measuring a model: speed and memory through qwq-edge, next to the raw engine."""

from .suite import BenchReport, BenchSettings, run_bench

__all__ = ["BenchReport", "BenchSettings", "run_bench"]
