"""progress.py: bars on a terminal, plain periodic lines (no \\r) elsewhere, bar-safe logging."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from sim_consistency.progress import PlainProgress, log_handler, progress_bar
from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_ten_percent_then_done():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(desc="vit wds/digits:test", total=200, unit="img", stream=out, clock=clock)
    for _ in range(20):
        clock.now += 0.5
        bar.update(10)
    bar.close()
    bar.close()  # once
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10  # 10 %, 20 %, …, 90 %, then done
    assert lines[0] == "vit wds/digits:test: 20/200 img (10%), 20 img/s, ETA 00:09"
    assert lines[8] == "vit wds/digits:test: 180/200 img (90%), 20 img/s, ETA 00:01"
    assert lines[9] == "vit wds/digits:test: done 200/200 img in 00:10 (20 img/s)"


def test_plain_lines_every_interval_when_slow_and_without_total():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(desc="grids", unit="pair", stream=out, clock=clock, interval_s=30)
    for _ in range(10):
        clock.now += 10
        bar.update()
    bar.set_postfix(running=2, failed=0)
    clock.now += 30
    bar.update()
    lines = out.getvalue().splitlines()
    assert lines == [
        "grids: 3 pair, 0.1 pair/s",
        "grids: 6 pair, 0.1 pair/s",
        "grids: 9 pair, 0.1 pair/s",
        "grids: 11 pair, 0.0846 pair/s [running=2, failed=0]",
    ]


def test_iteration_closes_and_disable_prints_nothing():
    out = io.StringIO()
    assert list(PlainProgress(range(5), desc="x", stream=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue().splitlines()[-1].startswith("x: done 5/5 it in ")
    quiet = io.StringIO()
    with progress_bar(total=3, disable=True, stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_terminal_gets_a_bar_and_a_file_gets_lines():
    assert isinstance(progress_bar(total=3, stream=io.StringIO()), PlainProgress)
    main, side = os.openpty()
    with os.fdopen(side, "w") as terminal:
        bar = progress_bar(total=3, stream=terminal, desc="t")
        assert isinstance(bar, tqdm)
        bar.close()
    os.close(main)


def test_log_records_do_not_glue_onto_a_live_bar():
    out = io.StringIO()
    logger = logging.getLogger("simc-progress-test")
    logger.propagate = False
    logger.addHandler(log_handler(out))
    with tqdm(total=10, desc="bar", file=out, mininterval=0) as bar:
        bar.update(3)
        logger.warning("a message")
        bar.update(3)
    text = out.getvalue()
    before, _, _ = text.partition("a message\n")
    assert before.endswith("\r")  # the bar's line was cleared first: the record starts a line
    assert text.index("a message") < text.rindex("6/10")  # and the bar is redrawn below it


@pytest.mark.slow
def test_extraction_log_file_has_plain_lines_and_no_carriage_return(tmp_path, digits_root):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    config = tmp_path / "models.json"
    config.write_text('{"vit": {"source": "timm", "model_name": "test_vit", "num_classes": 0}}')
    log = tmp_path / "slurm-123.err"
    with open(log, "w") as stderr:
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts/feature_extraction.py")]
            + ["--project_root", str(location.root), "--models_config", str(config)]
            + ["--splits", "test", "--max_samples", "24", "--batch_size", "8"]
            + ["--num_workers", "0", "--num_threads", "1"],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert any(line.startswith("vit wds/digits:test: 8/24 img (33%), ") for line in lines), text
    assert any(line.startswith("vit wds/digits:test: done 24/24 img in ") for line in lines)
    assert any(line.startswith("INFO sim_consistency") for line in lines)
