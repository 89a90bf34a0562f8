"""The model hub: is a text a repo id, and download a repository's files.

Downloads go through huggingface-hub, into its own cache: only the files asked for
(a rerun keeps the files that finished, checksums are checked by huggingface-hub),
with its progress bars. Offline (``HF_HUB_OFFLINE=1``, or no network) a repo that
is in the cache is used from there; one that is not gives a clear error naming it.
Every failure is a ``HubError``.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import HubError

#: What reads as a repo id (``owner/name``) rather than a path or a catalog name.
_REPO_ID_SHAPE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` has the shape of a hub repository id (``owner/name``)."""
    return bool(_REPO_ID_SHAPE.fullmatch(text))


def check_repo_id(repo_id: str) -> None:
    """Refuse an id the hub would refuse (``a/..``, ``foo/bar.``), with huggingface-hub's own rule."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"{repo_id} is not a valid hub repo id: {error}") from None


def download(repo_id: str, patterns: list[str]) -> Path:
    """The local snapshot of a hub repository (only files matching ``patterns``), downloaded if needed."""
    from huggingface_hub import errors, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    check_repo_id(repo_id)
    # A snapshot cut short by an interrupted download (recent huggingface-hub releases can tell).
    incomplete = getattr(errors, "IncompleteSnapshotError", ())
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise HubError(f"the hub has no repository {repo_id} (or it is private)") from None
    except incomplete as error:
        missing = re.search(r"\d+ file\(s\) are missing \([^)]*\)", str(error))
        raise HubError(
            f"the download of {repo_id} stopped before it finished ({missing[0] if missing else 'files are missing'})"
            " and the hub cannot be reached; run the same command again where it is: the files already in the "
            "cache are kept"
        ) from None
    except LocalEntryNotFoundError:
        raise HubError(
            f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
            "(offline or no network); download it where the hub is reachable, or pass a local folder"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise HubError(f"cannot download {repo_id}: {error}") from None
