"""The stage runtime (sim_consistency/runtime.py): generated parsers and the one driver."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text
from sim_consistency.outputs import json_digest, plan_reason, stored_key
from sim_consistency.runtime import Datasets, Force, Launcher, Stage, option, run_stage


@dataclass(frozen=True, kw_only=True)
class CountSettings(Datasets, Force, Launcher):
    """A small real stage: writes one JSON file per dataset name."""

    words: tuple[str, ...] = option("words to write", default=("a", "b"), nargs="+")
    repeat: int = option("how often", default=1, type=int)
    fail_on: str | None = option("a dataset whose item raises", default=None)

    def validated(self) -> CountSettings:
        s = super().validated()
        if s.repeat < 1:
            raise ConfigError(f"--repeat must be positive (got {s.repeat}).")
        return replace(s, words=tuple(w.upper() for w in s.words))


@dataclass(frozen=True)
class Item:
    dataset: str
    output: Path
    key: str


def _plan(settings: CountSettings) -> list[Item]:
    items = []
    for dataset in settings.datasets:
        output = settings.location.results / "count" / f"{dataset.replace('/', '_')}.json"
        key = json_digest({"words": settings.words, "repeat": settings.repeat})
        if plan_reason(output, key, stored_key(output), force=settings.force):
            items.append(Item(dataset, output, key))
    return items


def _run(settings: CountSettings, item: Item) -> Path:
    if item.dataset == settings.fail_on:
        raise ConfigError(f"cannot count {item.dataset}")
    record = {"content_key": item.key, "words": list(settings.words) * settings.repeat}
    return atomic_write_text(item.output, json.dumps(record))


STAGE = Stage(
    name="count",
    settings=CountSettings,
    description="Count words per dataset.",
    examples=("python count.py --datasets wds/digits --words x y",),
    plan=_plan,
    run=_run,
    outputs=lambda item: [item.output],
    label=lambda item: item.dataset,
    output_root=lambda settings: settings.location.results / "count",
)


def _main(root: Path, *argv: str) -> int:
    return run_stage(STAGE, ["--project_root", str(root), *argv])


def test_help_is_generated_with_defaults_examples_and_only_the_used_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_stage(STAGE, ["--help"], prog="count")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: count")
    assert "Count words per dataset." in text
    assert "Examples:\n  python count.py --datasets wds/digits --words x y" in text
    assert "--words WORDS [WORDS ...]" in text and "(default: a b)" in text
    assert "(default: wds/digits)" in text and "(default: local)" in text
    for absent in ("--device", "--models_config", "--wandb", "--num_threads"):
        assert absent not in text  # groups this stage does not use


def test_parse_gives_validated_typed_settings(tmp_path):
    settings = STAGE.parse(["--project_root", str(tmp_path), "--words", "x", "--repeat", "3"])
    assert settings.words == ("X",) and settings.repeat == 3
    assert settings.project_root == tmp_path.resolve() and settings.datasets == ("wds/digits",)


def test_the_driver_computes_then_reuses_then_forces(tmp_path, capsys):
    datasets = ("--datasets", "wds/digits", "wds/other")
    assert _main(tmp_path, *datasets) == 0
    out = capsys.readouterr().out
    assert "2 output(s) computed, 0 reused (up to date), 0 item(s) failed" in out
    assert str(tmp_path.resolve() / "results" / "count") in out
    assert _main(tmp_path, *datasets) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "0 output(s) computed, 2 reused" in out
    assert _main(tmp_path, *datasets, "--repeat", "2", "--force") == 0
    assert "2 output(s) computed" in capsys.readouterr().out
    written = json.loads((tmp_path / "results" / "count" / "wds_digits.json").read_text())
    assert written["words"] == ["A", "B", "A", "B"]


def test_a_local_item_that_fails_stops_the_run_and_keeps_finished_outputs(tmp_path, capsys):
    datasets = ("--datasets", "wds/digits", "wds/other")
    assert _main(tmp_path, *datasets, "--fail_on", "wds/other") == 2
    assert "error: cannot count wds/other\n" in capsys.readouterr().err
    assert _main(tmp_path, *datasets) == 0  # the finished item is reused, the other computed
    assert "1 output(s) computed, 1 reused" in capsys.readouterr().out


def test_bad_values_exit_2_with_one_line_and_no_traceback(tmp_path, capsys):
    assert _main(tmp_path, "--repeat", "0") == 2
    err = capsys.readouterr().err
    assert err == "error: --repeat must be positive (got 0).\n"
    assert _main(tmp_path, "--launcher", "slurm") == 2  # no --slurm_config
    assert "--slurm_config" in capsys.readouterr().err
    assert _main(tmp_path, "--datasets", "not a name!") == 2
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own checks: usage + exit 2
        _main(tmp_path, "--repeat", "many")
    assert exc.value.code == 2
