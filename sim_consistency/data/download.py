"""Download CLIP_benchmark's ``wds_<name>`` datasets from the Hugging Face hub into the project.

``wds/vtab/cifar10`` is the hub dataset repo ``clip-benchmark/wds_vtab-cifar10`` and lands in
``<root>/datasets/wds/wds_vtab-cifar10`` (:meth:`ProjectLocation.wds_dataset_dir`), holding
``classnames.txt``, ``zeroshot_classification_templates.txt`` and, per requested split,
``<split>/{0..N-1}.tar`` + ``<split>/nshards.txt``. ``huggingface_hub.snapshot_download``
resumes interrupted downloads and skips files that are already there.

Before anything else the hub endpoint (``$HF_ENDPOINT``, default ``https://huggingface.co``) is
probed with a short timeout, and ``$HF_HUB_OFFLINE`` is honoured, so an offline machine fails at
once with an :class:`~sim_consistency.errors.OfflineError` that says which folder to copy the
dataset into by hand. Command line (``scripts/download_ds/download_webdatasets.py``)::

    python scripts/download_ds/download_webdatasets.py --datasets configs/datasets/vtab.txt \\
        --splits train test --project_root DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sim_consistency.data.rep2rep_datasets import base_webdataset, is_rep2rep_dataset
from sim_consistency.data.resolve import parse_dataset_name, read_dataset_entries
from sim_consistency.errors import ConfigError, MissingInputError, OfflineError, SimcError
from sim_consistency.hub import hub_endpoint, hub_offline, unreachable
from sim_consistency.project import ProjectLocation

__all__ = [
    "HUB_ORGANISATION",
    "wds_name",
    "wds_repo_id",
    "read_webdataset_names",
    "check_hub_reachable",
    "download_webdataset",
    "main",
]

HUB_ORGANISATION = "clip-benchmark"
DEFAULT_TIMEOUT_S = 5.0
SHARED_FILES = ("classnames.txt", "zeroshot_classification_templates.txt")


def wds_name(name: str) -> str:
    """Return the webdataset name without its ``wds/`` prefix (``wds/vtab/cifar10`` -> ``vtab/cifar10``).

    Names are accepted with or without the prefix.

    Raises:
        ConfigError: not a valid webdataset name (e.g. an ``imagefolder:`` dataset).
    """
    if name.startswith("imagefolder:"):
        raise ConfigError(
            f"dataset '{name}': image folders are local and cannot be downloaded. Only "
            "'wds/<name>' datasets come from the Hugging Face hub."
        )
    full = name if name.startswith("wds/") else f"wds/{name}"
    return parse_dataset_name(full).name


def wds_repo_id(name: str) -> str:
    """Return the hub dataset repo of a webdataset.

    ``wds/vtab/cifar10`` (or ``vtab/cifar10``) -> ``clip-benchmark/wds_vtab-cifar10``.
    """
    return f"{HUB_ORGANISATION}/wds_{wds_name(name).replace('/', '-')}"


def read_webdataset_names(values: Sequence[str]) -> list[str]:
    """Return ``wds/<name>`` dataset names from names and ``.txt`` list files (Rep2Rep style).

    Entries may omit the ``wds/`` prefix; ``#`` starts a comment in a list file; repeats are
    dropped, first-seen order kept. Rep2Rep's derived names stand for the webdataset they are
    read from (``cifar100-coarse`` -> ``wds/vtab/cifar100``, the BREEDS tasks ->
    ``wds/imagenet1k``); ``imagenet-subset-<N>k`` (torchvision's ImageNet, not a webdataset) is
    skipped.

    Raises:
        MissingInputError: a list file does not exist.
        ConfigError: an entry is not a webdataset name (the message names file and line).
    """
    names = []
    for entry, origin in read_dataset_entries(values):
        if is_rep2rep_dataset(entry):
            base = base_webdataset(entry)
            if base is not None:
                names.append(base)
            continue
        try:
            names.append(f"wds/{wds_name(entry)}")
        except ConfigError as exc:
            raise ConfigError(str(exc) if origin == "argument" else f"{origin}: {exc}") from None
    if not names:
        raise ConfigError(
            f"no dataset names given (got {list(values)!r}). Pass names such as wds/vtab/cifar10 "
            "or a .txt file listing them."
        )
    return list(dict.fromkeys(names))


def _manual_copy_hint(targets: Sequence[tuple[str, Path]], splits: Sequence[str]) -> str:
    split_files = ", ".join(f"{split}/{{0..N-1}}.tar + {split}/nshards.txt" for split in splits)
    lines = [
        f"  {name}: copy the hub repo {wds_repo_id(name)} (from a machine with network access) "
        f"into {folder}"
        for name, folder in targets
    ]
    return (
        "To work offline, copy each dataset folder in by hand so that it holds classnames.txt "
        f"and {split_files}:\n" + "\n".join(lines)
    )


def check_hub_reachable(*, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Return the hub endpoint if it answers within ``timeout_s`` seconds.

    Any HTTP answer (even an error status) counts as reachable. The probe runs in a daemon
    thread joined with the timeout, so a hanging DNS lookup cannot delay the answer either.

    Raises:
        OfflineError: ``$HF_HUB_OFFLINE`` is set, or the endpoint cannot be reached in time.
    """
    endpoint = hub_endpoint()
    if hub_offline():
        flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
        raise OfflineError(f"the Hugging Face hub is switched off (HF_HUB_OFFLINE={flag})")
    reason = unreachable(endpoint, timeout_s, any_answer=True)
    if reason is not None:
        raise OfflineError(f"cannot reach the Hugging Face hub at {endpoint} ({reason})")
    return endpoint


def download_webdataset(
    name: str,
    *,
    location: ProjectLocation,
    splits: Sequence[str] = ("test",),
) -> Path:
    """Download (or complete) one CLIP_benchmark webdataset; return its folder.

    Call :func:`check_hub_reachable` first (``main`` does) to fail fast when offline.

    Args:
        name: ``wds/vtab/cifar10`` or ``vtab/cifar10``.
        location: the project root's folders.
        splits: the splits to fetch.

    Raises:
        ConfigError: no such dataset repo on the hub.
        MissingInputError: the repo has no such split.
        OfflineError: the download failed for lack of network.
    """
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id = wds_repo_id(name)
    folder = location.wds_dataset_dir(wds_name(name))
    folder.mkdir(parents=True, exist_ok=True)
    patterns = [f"{split}/*" for split in splits] + list(SHARED_FILES)
    try:
        huggingface_hub.snapshot_download(
            repo_id, repo_type="dataset", local_dir=folder, allow_patterns=patterns
        )
    except RepositoryNotFoundError as exc:
        raise ConfigError(
            f"dataset '{name}': the hub has no dataset repo {repo_id} (got {type(exc).__name__}). "
            "Check the name against CLIP_benchmark's dataset list (e.g. wds/vtab/cifar10)."
        ) from exc
    except (LocalEntryNotFoundError, ConnectionError, TimeoutError) as exc:
        raise OfflineError(
            f"{repo_id}: download interrupted ({type(exc).__name__}: {exc}). Run the command "
            f"again to resume, or copy the dataset into {folder} by hand."
        ) from exc
    for split in splits:
        if not (folder / split / "nshards.txt").is_file():
            raise MissingInputError(
                f"{folder / split}: the hub repo {repo_id} has no split '{split}' (got no "
                f"{split}/nshards.txt). Pick another split with --splits."
            )
    return folder


def main(argv: list[str] | None = None) -> int:
    """Download the named datasets; print each folder. Returns 0, or 2 on a reported error."""
    parser = argparse.ArgumentParser(
        description="Download CLIP_benchmark webdatasets (clip-benchmark/wds_* on the Hugging "
        "Face hub) into <project_root>/datasets/wds/."
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        help="dataset names (wds/vtab/cifar10 or vtab/cifar10) or .txt files with one per line",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "test"], help="splits to fetch")
    parser.add_argument(
        "--project_root",
        default=None,
        help="project root (default: $SIMC_ROOT, else project_root in the checkout)",
    )
    parser.add_argument(
        "--timeout_s", type=float, default=DEFAULT_TIMEOUT_S, help="hub reachability timeout"
    )
    args = parser.parse_args(argv)
    try:
        location = ProjectLocation.resolve(args.project_root)
        names = read_webdataset_names(args.datasets)
        targets = [(name, location.wds_dataset_dir(wds_name(name))) for name in names]
        try:
            check_hub_reachable(timeout_s=args.timeout_s)
        except OfflineError as exc:
            raise OfflineError(f"{exc}. {_manual_copy_hint(targets, args.splits)}") from None
        for name, _ in targets:
            folder = download_webdataset(name, location=location, splits=args.splits)
            print(f"{name}: {folder}")
    except SimcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
