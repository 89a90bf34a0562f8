"""Where a conversion's input comes from: a local folder, a ``.gguf`` file, or a hub repo id.

Hub checkpoints are fetched with huggingface-hub: only the files a conversion needs,
into its own cache (a rerun keeps the files that finished, checksums are checked by
huggingface-hub), with its progress bars. Offline (``HF_HUB_OFFLINE=1``, or no
network) a repo that is in the cache is used from there; one that is not gives a
clear error naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError

#: The files a conversion reads from a hub checkpoint.
HUB_PATTERNS = ["*.json", "*.safetensors", "merges.txt", "vocab.json"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def download(repo_id: str, patterns: list[str] | None = None) -> Path:
    """The local snapshot of a hub repository (only files matching ``patterns``), downloaded if needed."""
    from huggingface_hub import errors, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    # A snapshot cut short by an interrupted download (recent huggingface-hub releases can tell).
    incomplete = getattr(errors, "IncompleteSnapshotError", ())
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns or HUB_PATTERNS))
    except RepositoryNotFoundError:
        raise CheckpointError(f"the hub has no repository {repo_id} (or it is private)") from None
    except incomplete as error:
        missing = re.search(r"\d+ file\(s\) are missing \([^)]*\)", str(error))
        raise CheckpointError(
            f"the download of {repo_id} stopped before it finished ({missing[0] if missing else 'files are missing'})"
            " and the hub cannot be reached; run the same command again where it is: the files already in the "
            "cache are kept"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline or no network); download it where the hub is reachable, or pass a local folder"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise CheckpointError(f"cannot download {repo_id}: {error}") from None


def is_repo_id(text: str) -> bool:
    """Whether ``text`` reads like a hub repository id (``owner/name``)."""
    return bool(_REPO_ID.fullmatch(text))


def resolve_source(source: str | Path) -> Path:
    """A local path for ``source``: an existing path as is, a hub repo id downloaded."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if is_repo_id(text) and not text.endswith(".gguf"):
        return download(text)
    raise CheckpointError(f"{source} does not exist (and is not a hub repo id such as Qwen/QwQ-32B)")
