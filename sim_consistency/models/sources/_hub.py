"""Weights on disk: the Hugging Face cache first, one fast reachability check, clear errors.

Pretrained weights never trigger a slow or silent download: the Hugging Face cache is looked up
first (``HF_HUB_CACHE`` / ``HF_HOME`` read when the model is built); when the file is not there,
one metadata request without retries decides whether the hub is reachable, and if it is not a
:class:`~sim_consistency.errors.WeightsNotFoundError` says where we looked and how to provide
the weights. ``HF_HUB_OFFLINE=1`` skips the network entirely. URL-hosted checkpoints (timm,
torchvision, the ssl table) are looked up in the torch hub cache the same way.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from sim_consistency.errors import WeightsNotFoundError
from sim_consistency.hub import hf_hub_cache_dir, hub_endpoint, hub_offline, unreachable

__all__ = [
    "HUB_PROBE_TIMEOUT_S",
    "hf_hub_cache_dir",
    "resolve_hub_file",
    "url_file",
    "safe_alternatives",
    "hub_offline",
]

#: Seconds the single hub reachability request may take before the hub counts as unreachable.
HUB_PROBE_TIMEOUT_S = 8.0


def _how_to_provide(repo_id: str, cache_dir: Path) -> str:
    return (
        'Provide the weights: add "weights": "/path/to/model.safetensors" to the entry (a local '
        f"file), or populate the Hugging Face cache (`hf download {repo_id}` on a machine with "
        f"internet, then copy {cache_dir} here), or point HF_HOME / HF_HUB_CACHE at a cache that "
        "has it."
    )


def resolve_hub_file(
    repo_id: str,
    filenames: Sequence[str],
    *,
    revision: str | None = None,
    where: str,
) -> Path:
    """Return a local path to the first of ``filenames`` that ``repo_id`` provides.

    Looks in the Hugging Face cache (:func:`hf_hub_cache_dir`) first. If none is cached and the
    hub may be used (``HF_HUB_OFFLINE`` unset), one metadata request per candidate file, with no
    retries, finds the file, which is then downloaded into that cache.

    Args:
        repo_id: hub repository, e.g. ``timm/test_vit.r160_in1k``.
        filenames: candidate files in order of preference.
        revision: branch, tag or commit (default ``main``).
        where: who asks, for error messages.

    Raises:
        WeightsNotFoundError: not cached and the hub is offline, unreachable or lacks the files.
    """
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import EntryNotFoundError

    cache_dir = hf_hub_cache_dir()
    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(cached, str | os.PathLike) and Path(cached).is_file():
            return Path(cached)
    looked = (
        f"looked for {' or '.join(filenames)} of {repo_id}"
        + (f"@{revision}" if revision else "")
        + f" in the Hugging Face cache {cache_dir}"
    )
    if hub_offline():
        raise WeightsNotFoundError(
            f"{where}: pretrained weights are not cached and HF_HUB_OFFLINE is set ({looked}). "
            + _how_to_provide(repo_id, cache_dir)
        )
    endpoint = hub_endpoint()
    remote_missing = getattr(
        sys.modules["huggingface_hub.errors"], "RemoteEntryNotFoundError", EntryNotFoundError
    )
    for filename in filenames:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=HUB_PROBE_TIMEOUT_S)
        except remote_missing:
            continue
        except Exception as exc:  # connection refused, DNS failure, timeout, 401/404 repo, …
            raise WeightsNotFoundError(
                f"{where}: pretrained weights are not available ({looked}; the hub at "
                f"{endpoint} could not be reached: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). "
                + _how_to_provide(repo_id, cache_dir)
            ) from exc
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint
            )
        except Exception as exc:
            raise WeightsNotFoundError(
                f"{where}: downloading {filename} of {repo_id} from {endpoint} into {cache_dir} "
                f"failed ({type(exc).__name__}: {exc}). " + _how_to_provide(repo_id, cache_dir)
            ) from exc
        return Path(path)
    raise WeightsNotFoundError(
        f"{where}: the hub repository {repo_id} at {endpoint} has none of "
        f"{', '.join(filenames)} ({looked}). " + _how_to_provide(repo_id, cache_dir)
    )


def url_file(url: str, cache_dir: Path, *, where: str) -> Path | None:
    """Return the cached copy of a URL-hosted checkpoint, or ``None`` when it can be downloaded.

    Raises:
        WeightsNotFoundError: not cached and the host does not answer one HEAD request.
    """
    cached = cache_dir / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    _probe_url(url, where=where, looked=[cached], target=cached)
    return None


def _probe_url(url: str, *, where: str, looked: Sequence[Path], target: Path) -> None:
    """One HEAD request to ``url``; raise a note saying where we looked when it fails.

    Raises:
        WeightsNotFoundError: ``HF_HUB_OFFLINE`` is set or the host does not answer.
    """
    shown = ", ".join(str(p) for p in looked)

    def not_available(reason: str) -> WeightsNotFoundError:
        return WeightsNotFoundError(
            f"{where}: pretrained weights are not available (looked for {shown}; {url} could "
            f'not be reached: {reason}). Provide the weights: add "weights": "/path/to/file" to '
            f"the entry (a local file), or download {url} on a machine with internet and put "
            f"it at {target}."
        )

    if hub_offline():
        raise not_available("HF_HUB_OFFLINE is set")
    reason = unreachable(url, HUB_PROBE_TIMEOUT_S)
    if reason is not None:
        raise not_available(reason)


def safe_alternatives(filename: str) -> list[str]:
    """``filename`` preceded by its safetensors twin, the order timm and open_clip try them."""
    twins = {
        "pytorch_model.bin": "model.safetensors",
        "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
    }
    if filename in twins:
        return [twins[filename], filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def download_url(url: str, target: Path, *, where: str, looked: Sequence[Path]) -> Path:
    """Download ``url`` to ``target`` after one fast reachability check; return ``target``.

    Raises:
        WeightsNotFoundError: offline, unreachable, or the download failed; the message lists
            ``looked`` (the cache paths searched) and how to provide the file.
    """
    import torch.hub

    _probe_url(url, where=where, looked=looked, target=target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except (urllib.error.URLError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsNotFoundError(
            f"{where}: downloading {url} to {target} failed ({exc}). Download it on a machine "
            f'with internet and put it there, or add "weights": "/path/to/file" to the entry.'
        ) from exc
    return target
