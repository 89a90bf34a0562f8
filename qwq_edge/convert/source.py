"""Where a conversion's input comes from: a local folder, a ``.gguf`` file, or a hub repo id.

Hub checkpoints are fetched through ``qwq_edge.hub``: only the files a conversion
needs, into huggingface-hub's cache.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError
from ..system.hub import download, looks_like_repo_id

#: The files a conversion reads from a hub checkpoint.
HUB_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "vocab.json"]


def resolve_source(source: str | Path) -> Path:
    """A local path for ``source``: an existing path as is, a hub repo id downloaded."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if looks_like_repo_id(text) and not text.endswith(".gguf"):
        return download(text, HUB_PATTERNS)
    raise CheckpointError(f"{source} does not exist (and is not a hub repo id such as Qwen/QwQ-32B)")
