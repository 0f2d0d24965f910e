"""Loader for ``imagefolder:<path>`` datasets: torchvision's ImageFolder layout, one folder per split.

Layout::

    <path>/<split>/<class>/<image>        (images may sit in sub-folders of a class folder)

Classes are the sorted names of the class folders, label ``i`` = ``classnames[i]``. Rows follow
torchvision's ``ImageFolder`` order exactly (class by class; within a class, ``os.walk`` sorted,
file names sorted), so results line up with code that uses torchvision directly. A row's key is
the image path relative to the split folder, with ``/`` separators (``cat/001.png``).
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from sim_consistency.data.dataset import ImageDataset, Transform, decode_image
from sim_consistency.errors import DataError, MissingInputError

__all__ = ["ImageFolderDataset", "IMAGEFOLDER_EXTENSIONS"]

IMAGEFOLDER_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
"""File extensions read as images (torchvision's ``IMG_EXTENSIONS``); other files are ignored."""


def _class_images(class_dir: Path) -> list[Path]:
    """Return the image files under ``class_dir`` in torchvision's order."""
    found = []
    for folder, _, file_names in sorted(os.walk(class_dir, followlinks=True)):
        for file_name in sorted(file_names):
            if file_name.lower().endswith(IMAGEFOLDER_EXTENSIONS):
                found.append(Path(folder) / file_name)
    return found


class ImageFolderDataset(ImageDataset):
    """One split of an image folder tree, as a map-style dataset.

    Args:
        root: the dataset folder (``<path>`` of ``imagefolder:<path>``).
        split: the split sub-folder.
        name: dataset name for messages (default: ``imagefolder:<root>``).
        transform: applied to each decoded RGB ``PIL.Image``.

    Raises:
        MissingInputError: ``root`` or its split folder does not exist.
        DataError: the split has no class folder, or a class folder holds no image.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        name: str | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        name = name or f"imagefolder:{self.root}"
        if not self.root.is_dir():
            raise MissingInputError(
                f"{self.root}: image folder of {name} not found. Create it with one sub-folder "
                "per split, each holding one folder per class (<path>/<split>/<class>/<image>)."
            )
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            available = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise MissingInputError(
                f"{self.split_dir}: split '{split}' of {name} not found (available splits: "
                f"{', '.join(available) or 'none'}). Pick one of them or add the folder."
            )
        classnames = sorted(entry.name for entry in os.scandir(self.split_dir) if entry.is_dir())
        if not classnames:
            raise DataError(
                f"{self.split_dir}: no class folders in split '{split}' of {name} (got an empty "
                "split). Put each class's images in <split>/<class>/."
            )
        keys: list[str] = []
        labels: list[int] = []
        empty: list[str] = []
        for label, classname in enumerate(classnames):
            images = _class_images(self.split_dir / classname)
            if not images:
                empty.append(classname)
            keys += [path.relative_to(self.split_dir).as_posix() for path in images]
            labels += [label] * len(images)
        if empty:
            raise DataError(
                f"{self.split_dir}: class folder(s) without images: {', '.join(empty)} (got 0 "
                f"files ending in {', '.join(IMAGEFOLDER_EXTENSIONS)}). Add images or remove "
                "the folders."
            )
        super().__init__(
            name=name,
            split=split,
            classnames=classnames,
            keys=keys,
            labels=labels,
            transform=transform,
        )

    def path_of(self, index: int) -> Path:
        """Return the image file of row ``index``."""
        return self.split_dir / self.keys[index]

    def _read_bytes(self, row: int) -> bytes:
        key = self._all_keys[row]
        path = self.split_dir / key
        try:
            return path.read_bytes()
        except OSError as exc:
            raise MissingInputError(
                f"{path}: cannot read image of sample '{key}' ({exc.strerror}). The folder "
                "changed after the dataset was indexed; rebuild the dataset object."
            ) from exc

    def _load_image(self, row: int) -> Image.Image:
        key = self._all_keys[row]
        return decode_image(self._read_bytes(row), key=key, where=self.split_dir / key)

    def _location(self) -> str:
        return f"image folder {self.split_dir}"
