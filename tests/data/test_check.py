"""data/check.py (``simc datasets check``): the shipped digits pass; broken copies are named."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from sim_consistency.data.check import check_dataset, main
from sim_consistency.data.wds import WdsDataset

SIMC = Path(sys.executable).parent / "simc"


@pytest.fixture
def digits(tmp_path, digits_root) -> Path:
    """A private copy of the shipped wds/digits folder, to break."""
    copy = tmp_path / "wds_digits"
    shutil.copytree(digits_root.wds_dataset_dir("digits"), copy)
    return copy


def _members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def _rewrite(shard: Path, *, drop: str) -> None:
    """Rewrite ``shard`` without the member named ``drop``."""
    with tarfile.open(shard) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != drop]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, payload in kept:
            tar.addfile(member, io.BytesIO(payload))


def test_shipped_digits_pass(digits_root, capsys):
    folder = digits_root.wds_dataset_dir("digits")
    check = check_dataset(folder)
    assert check.is_ok, check.problems
    assert check.layout == "wds" and len(check.classnames) == 10
    sizes = {s.name: s.n_samples for s in check.splits}
    assert (
        sizes == {split: len(WdsDataset(folder, split)) for split in ("train", "val", "test")}
        and sum(sizes.values()) == 1797
    )
    assert all(len(s.class_counts) == 10 for s in check.splits)
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "split test: 360 samples in 2 shards, 10 classes present (images: png 360)" in out
    assert out.rstrip().endswith("OK")


def test_truncated_tar_and_missing_classnames_reported_together(digits, capsys):
    shard = digits / "test" / "1.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    (digits / "classnames.txt").unlink()
    check = check_dataset(digits)
    assert len(check.problems) == 2, check.problems
    assert any(p.startswith(f"{shard}: shard is truncated") for p in check.problems)
    assert any(
        f"{digits / 'classnames.txt'}: classnames file not found" in p for p in check.problems
    )
    assert main([str(digits)]) == 2
    assert "BROKEN: 2 problem(s)" in capsys.readouterr().out


def test_missing_label_names_shard_and_key(digits):
    shard = digits / "train" / "3.tar"
    label = next(m.name for m in _members(shard) if m.name.endswith(".cls"))
    _rewrite(shard, drop=label)
    key = label.rsplit(".", 1)[0]
    (problem,) = check_dataset(digits).problems
    assert problem.startswith(f"{shard}: sample '{key}' has no label (got members: png)")


def test_undecodable_image_names_member(digits):
    shard = digits / "val" / "0.tar"
    members = [m for m in _members(shard) if m.name.endswith(".png")]
    data = bytearray(shard.read_bytes())
    for member in members[3:5]:  # same size, garbage bytes: the tar stays valid
        data[member.offset_data : member.offset_data + member.size] = b"x" * member.size
    shard.write_bytes(bytes(data))
    (problem,) = check_dataset(digits).problems
    assert problem.startswith(
        f"{shard}: 2 undecodable image member(s): '{members[3].name}', '{members[4].name}'"
    )
    assert "cannot decode the image of sample" in problem
    assert check_dataset(digits, decode=False).is_ok  # headers and labels are fine


def test_empty_split_stray_shard_and_label_range(digits):
    empty = digits / "extra"
    empty.mkdir()
    (empty / "nshards.txt").write_text("1\n")
    with tarfile.open(empty / "0.tar", "w"):
        pass
    shutil.copy(digits / "test" / "0.tar", digits / "test" / "7.tar")
    names = (digits / "classnames.txt").read_text().splitlines()
    (digits / "classnames.txt").write_text("\n".join(names[:9]) + "\n")
    problems = check_dataset(digits).problems
    assert f"{empty}: split 'extra' holds no samples (got 1 shards with 0 samples)." in problems
    assert any(
        p.startswith(f"{digits / 'test'}: .tar files outside 0.tar … 1.tar") and "7.tar" in p
        for p in problems
    )
    out_of_range = [p for p in problems if "label outside range(0, 9)" in p]
    assert len(out_of_range) == 10  # every shard of every split has a 'nine'
    assert "(label 9)" in out_of_range[0]


def test_missing_shard_and_bad_nshards(digits):
    (digits / "train" / "5.tar").unlink()
    (digits / "val" / "nshards.txt").write_text("two\n")
    problems = check_dataset(digits).problems
    assert f"{digits / 'train' / '5.tar'}: shard not found (nshards.txt says 6)." in problems
    assert any(p.startswith(f"{digits / 'val' / 'nshards.txt'}: expected one") for p in problems)


def _png(path: Path, color=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 4), color).save(path)


def test_imagefolder_good_and_broken(tmp_path):
    root = tmp_path / "pets"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            for i in range(3):
                _png(root / split / cls / f"{i}.png")
    check = check_dataset(root)
    assert check.is_ok and check.layout == "imagefolder" and check.classnames == ["cat", "dog"]
    assert [s.n_samples for s in check.splits] == [6, 6]
    (root / "train" / "dog" / "1.png").write_bytes(b"not a png")
    shutil.rmtree(root / "val" / "dog")
    (root / "train" / "emu").mkdir()
    problems = check_dataset(root).problems
    assert len(problems) == 3, problems
    assert any(
        p.startswith(f"{root / 'train' / 'emu'}: class folder without images") for p in problems
    )
    assert any(
        p.startswith(f"{root / 'train' / 'dog'}: 1 undecodable image(s): dog/1.png")
        for p in problems
    )
    assert any(
        p.startswith(f"{root / 'val'}: split lacks class folder(s) dog, emu") for p in problems
    )


def test_not_a_dataset(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    assert "neither a webdataset folder" in check_dataset(tmp_path).problems[0]
    assert "not a folder (got nothing)" in check_dataset(tmp_path / "nope").problems[0]


def test_simc_datasets_check_exit_codes(digits):
    good = subprocess.run(
        [str(SIMC), "datasets", "check", str(digits)], capture_output=True, text=True
    )
    assert good.returncode == 0 and good.stdout.rstrip().endswith("OK"), good.stderr
    (digits / "classnames.txt").unlink()
    bad = subprocess.run(
        [str(SIMC), "datasets", "check", str(digits)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "classnames file not found" in bad.stdout


def test_a_dataset_name_is_looked_up_in_the_project_root(digits_root, capsys):
    assert main(["wds/digits", "--project_root", str(digits_root.root), "--no_decode"]) == 0
    assert capsys.readouterr().out.startswith(f"{digits_root.wds_dataset_dir('digits')}: ")
    assert main(["wds/absent", "--project_root", str(digits_root.root)]) == 2
    assert "not a folder (got nothing)" in capsys.readouterr().out
