"""Validate a dataset folder and name what is broken (``simc datasets check PATH``).

Two layouts are accepted, the ones :func:`~sim_consistency.data.resolve.load_dataset` reads:

* **webdataset** (``wds/<name>``, CLIP_benchmark's layout, :mod:`sim_consistency.data.wds`):
  ``classnames.txt``, optional ``zeroshot_classification_templates.txt``, and per split
  ``<split>/nshards.txt`` + ``<split>/{0..N-1}.tar``; each sample one image member (``webp``,
  ``png``, ``jpg``, ``jpeg``) and one ``cls`` member (the class index as ASCII text).
* **image folder** (``imagefolder:<path>``, :mod:`sim_consistency.data.imagefolder`):
  ``<split>/<class>/<image>``; classes are the sorted folder names of each split.

Unlike the loaders, which stop at the first problem, the check goes through every split, shard
and sample and reports every problem it finds, each naming the file and, inside a shard, the
member or sample key (a shard whose tar structure is broken is reported once: nothing after the
break can be trusted). It reads the tar headers with the loader's own indexing code, so a folder
that passes loads, and decodes every image (``decode=False`` skips that, the slow part).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sim_consistency.data.dataset import decode_image
from sim_consistency.data.imagefolder import IMAGEFOLDER_EXTENSIONS, _class_images
from sim_consistency.data.wds import (
    _index_shard,
    _read_at,
    _ShardEntries,
    read_classnames,
    read_nshards,
)
from sim_consistency.errors import SimcError

__all__ = ["DatasetCheck", "SplitSummary", "check_dataset", "main"]

#: Problems of one kind listed per shard or class before "… and N more".
MAX_LISTED = 5
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


@dataclass
class SplitSummary:
    """What one split holds.

    Attributes:
        name: split folder name.
        n_samples: readable samples.
        n_shards: tar shards (webdataset) or class folders (image folder).
        class_counts: samples per label.
        image_formats: samples per image extension.
    """

    name: str
    n_samples: int = 0
    n_shards: int = 0
    class_counts: Counter[int] = field(default_factory=Counter)
    image_formats: Counter[str] = field(default_factory=Counter)


@dataclass
class DatasetCheck:
    """The result of :func:`check_dataset`.

    Attributes:
        path: the folder checked.
        layout: ``"wds"``, ``"imagefolder"`` or ``"unknown"``.
        classnames: the dataset's class names (``None`` when unreadable).
        splits: one summary per split, sorted by name.
        problems: what is broken, one line each, naming file / member / key.
        notes: what is worth knowing but loads fine (e.g. classes without samples).
    """

    path: Path
    layout: Literal["wds", "imagefolder", "unknown"]
    classnames: list[str] | None = None
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        """True when nothing is broken."""
        return not self.problems

    def summary(self) -> str:
        """Return the human-readable report ``simc datasets check`` prints."""
        kind = {"wds": "webdataset", "imagefolder": "image folder", "unknown": "unknown layout"}
        n_classes = "?" if self.classnames is None else str(len(self.classnames))
        lines = [f"{self.path}: {kind[self.layout]}, {n_classes} classes"]
        for split in self.splits:
            unit = "shards" if self.layout == "wds" else "class folders"
            formats = ", ".join(f"{ext} {n}" for ext, n in sorted(split.image_formats.items()))
            lines.append(
                f"  split {split.name}: {split.n_samples} samples in {split.n_shards} {unit}, "
                f"{len(split.class_counts)} classes present"
                + (f" (images: {formats})" if formats else "")
            )
        lines += [f"  note: {note}" for note in self.notes]
        if self.is_ok:
            lines.append("OK")
        else:
            lines.append(f"BROKEN: {len(self.problems)} problem(s)")
            lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _detect_layout(path: Path) -> Literal["wds", "imagefolder", "unknown"]:
    subdirs = [p for p in path.iterdir() if p.is_dir()]
    if (path / "classnames.txt").exists() or any(
        (d / "nshards.txt").exists() or any(d.glob("*.tar")) for d in subdirs
    ):
        return "wds"
    if any(any(c.is_dir() for c in d.iterdir()) for d in subdirs):
        return "imagefolder"
    return "unknown"


def check_dataset(path: str | os.PathLike, *, decode: bool = True) -> DatasetCheck:
    """Return every problem of the dataset folder ``path``, and a summary of what it holds.

    Args:
        path: a webdataset folder (``.../datasets/wds/wds_<name>``) or an image folder.
        decode: decode every image (off: headers, labels and layout only).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        check = DatasetCheck(folder, "unknown")
        check.problems.append(
            f"{folder}: not a folder (got {'a file' if folder.exists() else 'nothing'})."
        )
        return check
    layout = _detect_layout(folder)
    check = DatasetCheck(folder, layout)
    if layout == "wds":
        _check_wds(check, decode=decode)
    elif layout == "imagefolder":
        _check_imagefolder(check, decode=decode)
    else:
        check.problems.append(
            f"{folder}: neither a webdataset folder (classnames.txt, <split>/nshards.txt, "
            "<split>/0.tar …) nor an image folder (<split>/<class>/<image>). See the README, "
            "'Bringing your own data'."
        )
    return check


# -- webdataset ----------------------------------------------------------------------------------
def _check_wds(check: DatasetCheck, *, decode: bool) -> None:
    folder = check.path
    try:
        check.classnames = read_classnames(folder / "classnames.txt")
    except SimcError as exc:
        check.problems.append(str(exc))
    templates = folder / TEMPLATES_FILE
    if templates.is_file():
        lines = [
            line for line in templates.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
        if not lines:
            check.problems.append(f"{templates}: no templates in file (got an empty file).")
    else:
        check.notes.append(
            f"no {TEMPLATES_FILE} (not read by sim-consistency; CLIP_benchmark's zero-shot "
            "evaluation uses it)"
        )
    split_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for split_dir in split_dirs:
        if not (split_dir / "nshards.txt").exists() and not any(split_dir.glob("*.tar")):
            check.notes.append(f"{split_dir}: no nshards.txt and no .tar files; not a split")
            continue
        check.splits.append(_check_wds_split(check, split_dir, decode=decode))
    if not check.splits:
        check.problems.append(
            f"{folder}: no split folders (a split is <split>/nshards.txt + <split>/0.tar …)."
        )
    _check_class_coverage(check)


def _check_wds_split(check: DatasetCheck, split_dir: Path, *, decode: bool) -> SplitSummary:
    summary = SplitSummary(split_dir.name)
    try:
        n_shards = read_nshards(split_dir)
    except SimcError as exc:
        check.problems.append(str(exc))
        n_shards = len(list(split_dir.glob("*.tar")))
    expected = {f"{i}.tar" for i in range(n_shards)}
    stray = sorted(p.name for p in split_dir.glob("*.tar") if p.name not in expected)
    if stray:
        check.problems.append(
            f"{split_dir}: .tar files outside 0.tar … {n_shards - 1}.tar of nshards.txt "
            f"(got {_listed(stray)}). Shards are named 0.tar, 1.tar, …; fix nshards.txt or "
            "rename the files."
        )
    n_classes = len(check.classnames) if check.classnames is not None else None
    seen: dict[str, Path] = {}
    for shard in (split_dir / f"{i}.tar" for i in range(n_shards)):
        if not shard.is_file():
            check.problems.append(f"{shard}: shard not found (nshards.txt says {n_shards}).")
            continue
        try:
            entries = _index_shard(shard)
        except SimcError as exc:
            check.problems.append(str(exc))
            continue
        summary.n_shards += 1
        repeated = [key for key in entries.keys if key in seen]
        if repeated:
            check.problems.append(
                f"{shard}: key(s) already in an earlier shard of the split: {_listed(repeated)}. "
                "Every __key__ of a split must be unique."
            )
        seen.update(dict.fromkeys(entries.keys, shard))
        if n_classes is not None:
            outside = [
                f"'{key}' (label {label})"
                for key, label in zip(entries.keys, entries.labels, strict=True)
                if not 0 <= label < n_classes
            ]
            if outside:
                check.problems.append(
                    f"{shard}: label outside range(0, {n_classes}) of classnames.txt: "
                    f"{_listed(outside)}."
                )
        if decode:
            _decode_shard(check, shard, entries)
        summary.n_samples += len(entries.keys)
        summary.class_counts.update(entries.labels)
        summary.image_formats.update(entries.extensions)
    if summary.n_samples == 0 and summary.n_shards == n_shards:  # else: already reported
        check.problems.append(
            f"{split_dir}: split '{split_dir.name}' holds no samples (got {n_shards} shards "
            "with 0 samples)."
        )
    return summary


def _decode_shard(check: DatasetCheck, shard: Path, entries: _ShardEntries) -> None:
    bad: list[str] = []
    first = ""
    fd = os.open(shard, os.O_RDONLY)
    try:
        for key, offset, size, ext in zip(
            entries.keys, entries.offsets, entries.sizes, entries.extensions, strict=True
        ):
            try:
                decode_image(_read_at(fd, offset, size), key=key, where=shard)
            except SimcError as exc:
                bad.append(f"'{key}.{ext}'")
                first = first or str(exc).split(". The file is corrupt")[0]
    finally:
        os.close(fd)
    if bad:
        check.problems.append(
            f"{shard}: {len(bad)} undecodable image member(s): {_listed(bad)} (first: {first})."
        )


# -- image folder --------------------------------------------------------------------------------
def _check_imagefolder(check: DatasetCheck, *, decode: bool) -> None:
    folder = check.path
    class_sets: dict[str, list[str]] = {}
    for split_dir in sorted(
        p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
        summary = SplitSummary(split_dir.name, n_shards=len(classes))
        check.splits.append(summary)
        if not classes:
            check.problems.append(
                f"{split_dir}: no class folders in split '{split_dir.name}' (got an empty split)."
            )
            continue
        class_sets[split_dir.name] = classes
        for label, classname in enumerate(classes):
            images = _class_images(split_dir / classname)
            if not images:
                check.problems.append(
                    f"{split_dir / classname}: class folder without images (no file ending in "
                    f"{', '.join(IMAGEFOLDER_EXTENSIONS)})."
                )
            bad: list[str] = []
            for image in images:
                if decode:
                    try:
                        decode_image(image.read_bytes(), key=image.name, where=image)
                    except (SimcError, OSError):
                        bad.append(str(image.relative_to(split_dir)))
                        continue
                summary.image_formats[image.suffix.lower().lstrip(".")] += 1
            if bad:
                check.problems.append(
                    f"{split_dir / classname}: {len(bad)} undecodable image(s): {_listed(bad)}."
                )
            summary.class_counts[label] += len(images) - len(bad)
            summary.n_samples += len(images) - len(bad)
    if not check.splits:
        check.problems.append(f"{folder}: no split folders (expected <split>/<class>/<image>).")
    if class_sets:
        union = sorted(set().union(*map(set, class_sets.values())))
        check.classnames = union
        for split, classes in class_sets.items():
            missing = sorted(set(union) - set(classes))
            if missing:
                check.problems.append(
                    f"{folder / split}: split lacks class folder(s) {_listed(missing)} that other "
                    "splits have; labels are positions in each split's sorted class list, so "
                    "they would not match across splits. Add the folders (with images)."
                )


def _check_class_coverage(check: DatasetCheck) -> None:
    if check.classnames is None:
        return
    for split in check.splits:
        absent = [
            check.classnames[i] for i in range(len(check.classnames)) if i not in split.class_counts
        ]
        if absent and split.n_samples:
            check.notes.append(
                f"split {split.name}: {len(absent)} of {len(check.classnames)} classes have no "
                f"sample ({_listed(absent)})"
            )


def _dataset_folder(path: str, project_root: str | None) -> Path:
    """Return ``path`` if it exists, else the folder of the dataset named ``path``."""
    if Path(path).expanduser().exists() or not path.startswith(("wds/", "imagefolder:")):
        return Path(path)
    from sim_consistency.data.resolve import dataset_dir
    from sim_consistency.project import ProjectLocation

    try:
        return dataset_dir(path, location=ProjectLocation.resolve(project_root))
    except SimcError:
        return Path(path)  # not a valid name either: reported as a missing folder


def main(argv: Sequence[str] | None = None) -> int:
    """``simc datasets check``: print the summary; 0 when the folder is good, 2 when broken."""
    parser = argparse.ArgumentParser(
        description="Validate a dataset folder (webdataset shards or image folder) and name "
        "every broken file, tar member, sample key or label; print what it holds.",
        epilog="Examples:\n  simc datasets check project_root/datasets/wds/wds_digits\n"
        "  simc datasets check wds/vtab/cifar10 --project_root /data/study\n"
        "  simc datasets check ~/data/pets --no_decode\n\nExit status: 0 good, 2 broken.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "path",
        help="the dataset folder (wds_<name> or an image folder), or a dataset name "
        "(wds/<name>, imagefolder:<path>) resolved in the project root",
    )
    parser.add_argument(
        "--project_root",
        default=None,
        help="where wds/<name> names are looked up (default: $SIMC_ROOT, else project_root in "
        "the checkout)",
    )
    parser.add_argument(
        "--no_decode",
        action="store_true",
        help="skip decoding the images (the slow part): check layout, tars and labels only",
    )
    args = parser.parse_args(argv)
    check = check_dataset(_dataset_folder(args.path, args.project_root), decode=not args.no_decode)
    print(check.summary())
    return 0 if check.is_ok else 2


if __name__ == "__main__":
    sys.exit(main())
