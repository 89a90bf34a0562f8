"""Engine adapters, one spec each, and the registry that chooses between them (``registry``).

``ENGINE_CHOICES`` are the built-in engines' names for the CLI's ``--engine``.
"""

from .registry import choose_engine, engine_choices, open_engine

ENGINE_CHOICES = engine_choices()

__all__ = ["ENGINE_CHOICES", "choose_engine", "open_engine"]
