"""ObjectNet's class map from its mappings folder, checked against model-soups' recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.probe.objectnet_map import objectnet_class_map
from sim_consistency.probe.transfer import project_scores, read_class_map

IMAGENET_LINES = ["tench, Tinca tinca", "goldfish", "analog clock", "digital clock", "banana",
                  "sock"]  # fmt: skip
#: torchvision index of each ImageNet 2012 id (0-based ids, as model-soups reads them)
PYTORCH_OF_ID = {0: 3, 1: 0, 2: 5, 3: 1, 4: 4, 5: 2}
FOLDERS = {"alarm_clock": "Alarm clock", "sock": "Sock", "banana": "Banana",
           "zebra_crossing": "Zebra crossing"}  # fmt: skip
TO_IMAGENET = {"Sock": "sock", "Alarm clock": "analog clock; digital clock", "Banana": "banana"}


def _mappings(root: Path, *, id_base: int = 0) -> Path:
    folder = root / "objectnet-1.0" / "mappings"
    folder.mkdir(parents=True)
    (folder / "folder_to_objectnet_label.json").write_text(json.dumps(FOLDERS))
    (folder / "objectnet_to_imagenet_1k.json").write_text(json.dumps(TO_IMAGENET))
    (folder / "imagenet_to_label_2012_v2").write_text("\n".join(IMAGENET_LINES) + "\n")
    pytorch = {str(p): i + id_base for i, p in PYTORCH_OF_ID.items()}
    (folder / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps(pytorch))
    return folder


def _reference_map() -> list[list[int]]:
    """model-soups' get_metadata + sorted folders, written out independently."""
    pytorch_map = {v: k for k, v in {str(p): i for i, p in PYTORCH_OF_ID.items()}.items()}
    imagenet_map = {v.strip(): str(pytorch_map[i]) for i, v in enumerate(IMAGENET_LINES)}
    folder_map = {v: k for k, v in FOLDERS.items()}
    folder_to_ids = {
        folder_map[name]: [int(imagenet_map[n]) for n in names.split("; ")]
        for name, names in TO_IMAGENET.items()
    }
    return [folder_to_ids[f] for f in sorted(folder_to_ids)]


@pytest.mark.parametrize("id_base", [0, 1])
def test_map_follows_model_soups_and_sorts_the_mapped_folders(tmp_path, id_base):
    folder = _mappings(tmp_path, id_base=id_base)
    expected = _reference_map()
    assert [list(e) for e in objectnet_class_map(folder)] == expected
    # alarm_clock, banana, sock: the unmapped zebra_crossing folder is no target class
    assert expected == [[PYTORCH_OF_ID[2], PYTORCH_OF_ID[3]], [PYTORCH_OF_ID[4]],
                        [PYTORCH_OF_ID[5]]]  # fmt: skip
    # the objectnet-1.0 folder works too, through read_class_map (a directory)
    assert [list(e) for e in read_class_map(folder.parent)] == expected


def test_scores_are_the_max_over_each_objectnet_class(tmp_path):
    class_map = objectnet_class_map(_mappings(tmp_path))
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 6))
    projected = project_scores(scores, np.arange(6), class_map, "objectnet")
    np.testing.assert_array_equal(projected[:, 0], scores[:, [5, 1]].max(axis=1))
    np.testing.assert_array_equal(projected[:, 1], scores[:, 4])
    np.testing.assert_array_equal(projected[:, 2], scores[:, 2])


def test_broken_mappings_name_the_file_and_entry(tmp_path):
    with pytest.raises(ConfigError, match="not ObjectNet's mappings folder"):
        objectnet_class_map(tmp_path)
    folder = _mappings(tmp_path)
    (folder / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Sock": "socks"}))
    with pytest.raises(ConfigError, match=r"'Sock' maps to ImageNet class 'socks'"):
        objectnet_class_map(folder)
    (folder / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Kettle": "sock"}))
    with pytest.raises(ConfigError, match="'Kettle' has no image folder"):
        objectnet_class_map(folder)
    (folder / "pytorch_to_imagenet_2012_id.json").unlink()
    with pytest.raises(ConfigError, match="missing pytorch_to_imagenet_2012_id.json"):
        objectnet_class_map(folder)
