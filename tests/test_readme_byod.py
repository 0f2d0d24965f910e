"""README, "Bringing your own data": its conversion script makes shards that load and pass
``simc datasets check``, with the summary the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from sim_consistency.data import WdsDataset
from sim_consistency.data.check import check_dataset

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Bringing your own data\n", 1)[1].split("\n## ", 1)[0]


def _image_folder(root: Path, sizes: dict[str, int]) -> None:
    for split, per_class in sizes.items():
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (6, 5), (label * 200, i, 7)).save(folder / f"{i:03d}.png")


def test_conversion_script_makes_a_dataset_that_checks_and_loads(tmp_path):
    (script,) = re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)
    assert script.startswith("# (run by tests/test_readme_byod.py")
    _image_folder(tmp_path / "my_images", {"train": 60, "test": 20})
    (tmp_path / "convert.py").write_text(script)
    subprocess.run([sys.executable, "convert.py"], cwd=tmp_path, check=True)

    folder = tmp_path / "project_root/datasets/wds/wds_my_data"
    check = check_dataset(folder)
    assert check.is_ok, check.problems
    shown = re.search(r"\$ uv run simc datasets check (\S+)\n(.*?)```", SECTION, flags=re.S)
    assert shown and shown.group(1) == "project_root/datasets/wds/wds_my_data"
    expected = [line for line in shown.group(2).splitlines() if "note:" not in line]
    actual = check.summary().replace(str(folder), shown.group(1)).splitlines()
    assert [line for line in actual if "note:" not in line] == expected

    test = WdsDataset(folder, "test")
    assert test.classnames == ["cat", "dog"] and len(test) == 40
    assert test.labels.tolist() == [0] * 20 + [1] * 20
    assert test[25].image.getpixel((0, 0)) == (200, 5, 7)  # dog 005.png, pixels unchanged
