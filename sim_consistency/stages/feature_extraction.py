"""Stage: block-wise feature extraction into the HDF5 cache.

``python scripts/feature_extraction.py --models_config … --datasets … [--model_key …]
[--max_samples N] [--batch_size B] [--dtype float16|float32] [--force] [--verify]
[--list_blocks]
[--launcher slurm --slurm_config debug [--job_per model_dataset] [--no_wait]] [--wandb]``
writes ``features/<dataset_slug>/<split>/<model_id>.h5`` for every model x dataset x split.

Flow: :func:`plan_model` computes each output's content key (weights digest, recipe,
preprocessing, pooling, blocks, rows) and keeps the outputs that are missing or stale (all with
``--force``); :func:`extract_to_cache` fills one file through
:class:`~sim_consistency.features.BlockExtractor` and
:func:`~sim_consistency.io.atomic_output`, so an interrupted run leaves no file a reader
accepts.

Launch: locally, each model is built once and extracts its outputs in this process. With
``--launcher slurm`` the submitter plans first (so a rerun submits only what is missing or
stale) and :func:`~sim_consistency.launch.launch` runs one job per model (:class:`ExtractionJob`),
or one per model x dataset with ``--job_per model_dataset``; jobs never share an output file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

import sim_consistency
from sim_consistency.config import ModelSpec, load_models_config, select_models
from sim_consistency.data import (
    ImageDataset,
    Sample,
    collate_samples,
    load_dataset,
    read_dataset_list,
)
from sim_consistency.data.wds import EncodedImages, collate_encoded
from sim_consistency.device import resolve_device
from sim_consistency.errors import ConfigError, SimcError
from sim_consistency.features.cache import (
    CORRUPT_SUFFIX,
    FeatureCacheWriter,
    inspect_cache,
    read_cache_attrs,
)
from sim_consistency.features.extract import (
    BlockExtractor,
    BlockSpec,
    DeviceDecoder,
    write_features,
)
from sim_consistency.features.keys import EXTRACTION_CODE_VERSION, content_key, keys_fingerprint
from sim_consistency.io import atomic_output, clean_stale_partial
from sim_consistency.launch import (
    LaunchOptions,
    LaunchReport,
    launch,
    launch_options_from_args,
)
from sim_consistency.models import REP2REP_BLOCK, LoadedModel, create_model
from sim_consistency.progress import progress_bar
from sim_consistency.project import ProjectLocation
from sim_consistency.stages.cli import (
    parse_stage_args,
    run_main,
)
from sim_consistency.threads import threads_metadata
from sim_consistency.tracking import start_tracking

__all__ = [
    "ExtractionJob",
    "ExtractionSettings",
    "WorkItem",
    "add_arguments",
    "block_specs",
    "extract_to_cache",
    "main",
    "plan",
    "plan_jobs",
    "plan_model",
    "resolve_device",
    "run_job",
]

log = logging.getLogger("sim_consistency.feature_extraction")

_LIBRARIES = (
    "torch",
    "torchvision",
    "timm",
    "open_clip_torch",
    "transformers",
    "h5py",
    "numpy",
    "webdataset",
)


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything a feature-extraction run depends on, validated (picklable for SLURM)."""

    project_root: Path
    models_config: Path
    model_ids: tuple[str, ...]
    datasets: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "test")
    max_samples: int | None = None
    per_class_cap: int | None = None
    subset_seed: int = 0
    batch_size: int = 64
    dtype: str = "float16"
    num_workers: int = 0
    device: str = "auto"
    force: bool = False
    verify: bool = False
    decode_device: str = "cpu"  # "cuda": decode JPEGs + preprocess on the model's GPU

    @property
    def location(self) -> ProjectLocation:
        return ProjectLocation(self.project_root)


@dataclass(frozen=True)
class WorkItem:
    """One output file to (re)build: a model on a dataset split."""

    model_id: str
    dataset: str
    split: str
    output: Path
    content_key: str
    reason: str  # "missing" | "stale" | "invalid" | "forced"
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)


def block_specs(loaded: LoadedModel) -> list[BlockSpec]:
    """Return how each of the model's blocks is hooked and pooled, in forward order.

    Rep2Rep's representation (entries with ``module_name``) comes last, as block
    :data:`~sim_consistency.models.REP2REP_BLOCK`.
    """
    specs = [
        BlockSpec(
            name=info.name,
            layout=info.layout,
            pooling=loaded.block_pooling[info.name],
            n_prefix_tokens=info.n_prefix_tokens,
        )
        for info in loaded.blocks
    ]
    if loaded.rep2rep is not None:
        specs.append(
            BlockSpec(
                name=REP2REP_BLOCK,
                layout="rep2rep",
                pooling=loaded.rep2rep.pooling,
                module=loaded.rep2rep.module_name,
            )
        )
    return specs


def _stored_blocks(loaded: LoadedModel) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Stored block names, their pooling and widths (Rep2Rep's representation included)."""
    names = list(loaded.block_names)
    pooling = dict(loaded.block_pooling)
    dims = {info.name: info.dim for info in loaded.blocks}
    if loaded.rep2rep is not None:
        names.append(REP2REP_BLOCK)
        pooling[REP2REP_BLOCK] = f"rep2rep:{loaded.rep2rep.pooling}+l2"
        dims[REP2REP_BLOCK] = loaded.rep2rep.dim
    return names, pooling, dims


def _library_versions() -> dict[str, str]:
    versions = {"sim_consistency": sim_consistency.__version__}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def plan_model(
    settings: ExtractionSettings, spec: ModelSpec, loaded: LoadedModel
) -> list[WorkItem]:
    """Return the outputs of one model that must be (re)built, with their content keys.

    An output is skipped (and logged as such) when a complete file with the same content key
    exists and passes the schema check (attributes, datasets, row counts: no feature data is
    read, so planning cost does not grow with cache size); a file with another key is stale,
    one that fails the check or is not a cache of ours is invalid, and both are rebuilt;
    ``--force`` rebuilds everything. Checksums are verified by the readers, which set a corrupt
    file aside (:func:`~sim_consistency.features.quarantine_cache`) so that it is rebuilt here
    as missing; ``--verify`` reads every existing cache in full now instead. A ``.partial`` left by a killed run is removed
    here (unless a live writer holds it), even when the output itself is up to date.
    """
    block_names, pooling, _ = _stored_blocks(loaded)
    items: list[WorkItem] = []
    for dataset in settings.datasets:
        for split in settings.splits:
            data = _dataset(settings, dataset, split)
            data_digest = data.content_digest()
            key = content_key(
                weights_sha256=loaded.weights_sha256,
                recipe=spec.recipe(),
                preprocessing=loaded.preprocessing,
                pooling=pooling,
                block_names=block_names,
                dataset=dataset,
                split=split,
                rows_fingerprint=keys_fingerprint(data.keys),
                data_digest=data_digest,
                storage_dtype=settings.dtype,
                has_logits=loaded.has_head,
            )
            output = settings.location.feature_file(dataset, split, spec.model_id)
            clean_stale_partial(output)
            status = None if settings.force else inspect_cache(output, verify=settings.verify)
            existing = status.attrs if status is not None else None
            if status is None:
                reason = "forced"
            elif existing is None and status.problem == "no such file":
                reason = "missing"
                corrupt = output.with_name(output.name + CORRUPT_SUFFIX)
                if corrupt.exists():
                    log.warning(
                        "%s: rebuilding the cache that a reader found corrupt (set aside as %s)",
                        output,
                        corrupt.name,
                    )
            elif status.problem is not None:
                reason = "invalid"
                log.warning("%s: %s; rebuilding", output, status.problem)
            elif existing is not None and existing.get("content_key") != key:
                reason = "stale"
                log.info(
                    "%s: content key changed (%s… -> %s…); rebuilding",
                    output,
                    str(existing.get("content_key"))[:10],
                    key[:10],
                )
            else:
                log.info("%s: up to date (content key %s…), skipped", output, key[:10])
                continue
            attrs = {
                "model_id": spec.model_id,
                "content_key": key,
                "recipe": spec.recipe(),
                "weights_sha256": loaded.weights_sha256,
                "preprocessing": loaded.preprocessing,
                "pooling": loaded.pooling,
                "block_pooling": pooling,
                "rep2rep": loaded.rep2rep.attrs() if loaded.rep2rep is not None else None,
                "dataset": dataset,
                "split": split,
                "subset": {
                    "max_samples": settings.max_samples,
                    "per_class_cap": settings.per_class_cap,
                    "seed": settings.subset_seed,
                    "n_source_rows": data.n_source_rows,
                    "rows_fingerprint": keys_fingerprint(data.keys),
                    "data_digest": data_digest,
                },
                "code_version": EXTRACTION_CODE_VERSION,
                "library_versions": _library_versions(),
                "metadata": _json_metadata(spec),
            }
            items.append(WorkItem(spec.model_id, dataset, split, output, key, reason, attrs))
    return items


def _json_metadata(spec: ModelSpec) -> str:
    import json

    return json.dumps(dict(spec.metadata), default=str)


def _dataset(
    settings: ExtractionSettings, dataset: str, split: str, transform=None
) -> ImageDataset:
    return load_dataset(
        dataset,
        split,
        location=settings.location,
        transform=transform,
        max_samples=settings.max_samples,
        per_class_cap=settings.per_class_cap,
        seed=settings.subset_seed,
    )


# -- variants: built on the fly when not materialised (merging owns how) ---------------------


def _ensure_variant(
    settings: ExtractionSettings, specs: Mapping[str, ModelSpec], model_id: str
) -> None:
    """Materialise ``model_id`` first if it is a variant that is missing or stale."""
    if specs[model_id].is_variant:
        from sim_consistency.merging import materialise_variant

        materialise_variant(
            specs[model_id],
            specs,
            location=settings.location,
            device=resolve_device(settings.device),
        )


def plan(settings: ExtractionSettings) -> list[WorkItem]:
    """Return every output to build (builds each model on the CPU to read its content key)."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    items: list[WorkItem] = []
    for model_id in settings.model_ids:
        _ensure_variant(settings, specs, model_id)
        loaded = create_model(specs[model_id], specs, device="cpu", location=settings.location)
        items.extend(plan_model(settings, specs[model_id], loaded))
    return items


def extract_to_cache(
    settings: ExtractionSettings, item: WorkItem, loaded: LoadedModel, *, progress: bool = True
) -> Path:
    """Extract one model on one dataset split into ``item.output`` (atomically)."""
    blocks = block_specs(loaded)
    decoder = _device_decoder(settings, loaded)
    data = _dataset(settings, item.dataset, item.split, transform=loaded.transform)
    # ImageDataset is map-style (__len__ / __getitem__), all a DataLoader uses of a Dataset.
    loader: torch.utils.data.DataLoader[Sample] = torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Sample]", EncodedImages(data) if decoder else data),
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.num_workers,
        collate_fn=collate_encoded if decoder else collate_samples,
        pin_memory=loaded.device.type == "cuda",
        persistent_workers=False,
    )
    _, _, dims = _stored_blocks(loaded)
    start = time.perf_counter()
    with (
        atomic_output(item.output) as tmp,
        BlockExtractor(loaded.model, blocks, with_logits=loaded.has_head) as extractor,
    ):
        writer = FeatureCacheWriter(
            tmp,
            block_dims=dims,
            n_classes=loaded.n_classes if loaded.has_head else None,
            storage_dtype=settings.dtype,
            expected_rows=len(data),
            float32_blocks=(REP2REP_BLOCK,),
        )
        try:
            with progress_bar(
                total=len(data),
                desc=f"{item.model_id} {item.dataset}:{item.split}",
                unit="img",
                disable=not progress,
                leave=False,
            ) as bar:  # closed (and cleared) on errors too: the message starts its own line
                write_features(
                    extractor,
                    decoder.batches(_ordered_batches(loader))
                    if decoder
                    else _ordered_batches(loader),
                    writer,
                    device=loaded.device,
                    on_rows=bar.update,
                )
            if writer.n_rows != len(data):
                raise RuntimeError(f"wrote {writer.n_rows} rows for {len(data)} samples")
            writer.finalize(
                {
                    **item.attrs,
                    "n_classes_dataset": data.n_classes,
                    # Not in the content key: devices agree to float rounding, not bitwise.
                    "device": str(loaded.device),
                    "batch_size": settings.batch_size,
                    "decode_device": settings.decode_device,
                    **threads_metadata(),
                }
            )
        finally:
            writer.close()
    seconds = time.perf_counter() - start
    size_mb = item.output.stat().st_size / 2**20
    log.info(
        "%s: %d rows, %d blocks, %.1f MB, %.1f s, %.1f images/s",
        item.output,
        len(data),
        len(blocks),
        size_mb,
        seconds,
        len(data) / max(seconds, 1e-9),
    )
    return item.output


def _device_decoder(settings: ExtractionSettings, loaded: LoadedModel) -> DeviceDecoder | None:
    """Return the on-device decoder for ``--decode_device cuda``, else ``None`` (PIL)."""
    if settings.decode_device == "cpu":
        return None
    if loaded.device.type != "cuda":
        raise ConfigError(
            f"--decode_device {settings.decode_device}: the model runs on {loaded.device}; "
            "decoding on the GPU needs --device cuda (or auto on a GPU machine)."
        )
    return DeviceDecoder(loaded.transform, loaded.device)


def _ordered_batches(loader: torch.utils.data.DataLoader):
    """Yield ``(keys, labels, images)`` from a loader, checking rows arrive in dataset order."""
    expected = 0
    for batch in loader:
        first = int(batch.index[0])
        if first != expected:
            raise RuntimeError(
                f"loader returned rows out of order: row {first}, expected {expected}"
            )
        expected += len(batch.key)
        yield batch.key, batch.label.numpy(), batch.image


def run_model(settings: ExtractionSettings, model_id: str, *, progress: bool = True) -> list[Path]:
    """Plan and extract every missing/stale output of one model (one SLURM job's work)."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    device = resolve_device(settings.device)
    _ensure_variant(settings, specs, model_id)
    loaded = create_model(specs[model_id], specs, device=device, location=settings.location)
    items = plan_model(settings, specs[model_id], loaded)
    return [extract_to_cache(settings, item, loaded, progress=progress) for item in items]


@dataclass(frozen=True)
class ExtractionJob:
    """One launcher work item: a model on some datasets (every split), i.e. one SLURM job."""

    model_id: str
    datasets: tuple[str, ...]
    per_dataset: bool = False

    def __str__(self) -> str:
        return f"{self.model_id}@{self.datasets[0]}" if self.per_dataset else self.model_id


def run_job(
    settings: ExtractionSettings, job: ExtractionJob, *, progress: bool = False
) -> list[Path]:
    """Extract the missing/stale outputs of ``job`` (what one SLURM job runs; picklable)."""
    return run_model(replace(settings, datasets=job.datasets), job.model_id, progress=progress)


def plan_jobs(
    settings: ExtractionSettings, items: Sequence[WorkItem], *, per_dataset: bool = False
) -> dict[ExtractionJob, list[Path]]:
    """Group planned outputs into jobs (per model, or per model x dataset) -> their outputs."""
    jobs: dict[ExtractionJob, list[Path]] = {}
    for item in items:
        datasets = (item.dataset,) if per_dataset else settings.datasets
        job = ExtractionJob(item.model_id, datasets, per_dataset)
        jobs.setdefault(job, []).append(item.output)
    return jobs


def _launch(
    settings: ExtractionSettings, options: LaunchOptions, *, per_dataset: bool
) -> LaunchReport:
    if options.launcher == "local":
        # Each model is built once and plans its own outputs: no separate planning pass.
        units: list[tuple[str, tuple[str, ...]]] = [
            (m, (d,)) for m in settings.model_ids for d in settings.datasets
        ]
        if not per_dataset:
            units = [(m, settings.datasets) for m in settings.model_ids]
        jobs: dict[ExtractionJob, list[Path]] = {
            ExtractionJob(m, datasets, per_dataset): [] for m, datasets in units
        }
    else:
        jobs = plan_jobs(settings, plan(settings), per_dataset=per_dataset)
    return launch(
        partial(run_job, settings, progress=options.launcher == "local"),
        list(jobs),
        stage="feature_extraction",
        location=settings.location,
        options=options,
        outputs=jobs.__getitem__,
    )


def _written_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        attrs = read_cache_attrs(path) or {}
        rows.append(
            {
                "model_id": attrs.get("model_id"),
                "dataset": attrs.get("dataset"),
                "split": attrs.get("split"),
                "n_rows": attrs.get("n_rows"),
                "content_key": attrs.get("content_key"),
                "path": str(path),
            }
        )
    return rows


def list_blocks(settings: ExtractionSettings) -> str:
    """Return the dry-run report: blocks, pooled dims, bytes per image, projected cache size.

    Models are built on the meta device: no weights are read, downloaded or allocated, so the
    largest architectures list their blocks in seconds.

    Raises:
        ConfigError: some entries cannot be built; the message is the whole report with the
            reason on each such entry's line.
    """
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    n_rows = {
        (d, s): len(_dataset(settings, d, s)) for d in settings.datasets for s in settings.splits
    }
    total_rows = sum(n_rows.values())
    itemsize = np.dtype(settings.dtype).itemsize
    lines: list[str] = []
    grand_total = 0
    failures: list[str] = []
    for model_id in settings.model_ids:
        try:  # the architecture only: no weights are read or allocated
            loaded = create_model(specs[model_id], specs, device="meta", location=settings.location)
        except SimcError as exc:
            failures.append(str(exc))
            lines.append(f"{model_id}: cannot be built: {exc}")
            continue
        blocks = block_specs(loaded)
        per_image = sum(info.dim for info in loaded.blocks) * itemsize
        if loaded.rep2rep is not None:
            per_image += loaded.rep2rep.dim * 4  # float32, as Rep2Rep stores it
        if loaded.has_head and loaded.n_classes:
            per_image += loaded.n_classes * 4
        projected = per_image * total_rows
        grand_total += projected
        lines.append(
            f"{model_id}: {loaded.family}, {len(loaded.blocks)} blocks"
            + (" + rep2rep" if loaded.rep2rep is not None else "")
            + f", {per_image:,} bytes/image, "
            f"{total_rows:,} images -> {projected / 2**20:.1f} MB"
            + (f" (+ logits {loaded.n_classes})" if loaded.has_head else "")
        )
        for info, block in zip(loaded.blocks, blocks[: len(loaded.blocks)], strict=True):
            lines.append(
                f"  {info.name:<32} {info.kind:<9} d={info.dim:<6} pooling={block.pooling}"
            )
        if loaded.rep2rep is not None:
            r = loaded.rep2rep
            lines.append(
                f"  {REP2REP_BLOCK:<32} {'vector':<9} d={r.dim:<6} pooling={r.pooling}+l2 "
                f"(module {r.module_name}, output {list(r.output_shape)}, float32)"
            )
    lines.append("datasets: " + ", ".join(f"{d}:{s} ({n:,} rows)" for (d, s), n in n_rows.items()))
    lines.append(f"projected cache size: {grand_total / 2**20:.1f} MB")
    if failures:
        raise ConfigError(
            "\n".join(lines) + f"\n{len(failures)} model(s) cannot be built (see above)."
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's own flags (the shared ones come from :mod:`stages.cli`)."""
    parser.add_argument("--splits", nargs="+", default=["train", "test"], help="dataset splits")
    parser.add_argument(
        "--max_samples",
        type=int,
        default=None,
        help="class-stratified subset of at most N rows per split",
    )
    parser.add_argument(
        "--per_class_cap",
        type=int,
        default=None,
        help="at most this many rows per class (default ceil(N / classes))",
    )
    parser.add_argument("--subset_seed", type=int, default=0, help="seed of the subset draw")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="storage dtype of pooled blocks (float16 falls back per block)",
    )
    parser.add_argument(
        "--num_workers",
        type=int,
        default=min(4, max(0, (os.cpu_count() or 1) - 1)),
        help="DataLoader worker processes (decode + transform)",
    )
    parser.add_argument(
        "--decode_device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: workers only read the encoded files; JPEG decoding (nvJPEG) and the eval "
        "transform run on the model's GPU (equal to the PIL path within 12/255 per pixel)",
    )
    parser.add_argument(
        "--job_per",
        choices=["model", "model_dataset"],
        default="model",
        help="one job per model (default), or a job array over model x dataset",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="read every existing cache in full while planning (checksums; slow at scale)",
    )
    parser.add_argument(
        "--list_blocks",
        action="store_true",
        help="dry run: print blocks, dims and projected cache size; extract nothing",
    )


def settings_from_args(args: argparse.Namespace) -> ExtractionSettings:
    """Validate parsed flags into :class:`ExtractionSettings` (raises ConfigError)."""
    location = ProjectLocation.resolve(args.project_root)
    specs = load_models_config(args.models_config, base_dir=location.root)
    model_ids = select_models(specs, args.model_key)
    for name, value in (
        ("--batch_size", args.batch_size),
        ("--max_samples", args.max_samples),
        ("--per_class_cap", args.per_class_cap),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"{name} must be a positive integer (got {value}).")
    if args.num_workers < 0:
        raise ConfigError(f"--num_workers must be >= 0 (got {args.num_workers}).")
    return ExtractionSettings(
        project_root=location.root,
        models_config=Path(args.models_config).resolve(),
        model_ids=tuple(model_ids),
        datasets=tuple(read_dataset_list(args.datasets)),
        splits=tuple(args.splits),
        max_samples=args.max_samples,
        per_class_cap=args.per_class_cap,
        subset_seed=args.subset_seed,
        batch_size=args.batch_size,
        dtype=args.dtype,
        num_workers=args.num_workers,
        device=args.device,
        force=args.force,
        verify=args.verify,
        decode_device=args.decode_device,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, extract; print a summary. Returns the exit code."""
    args = parse_stage_args(__doc__, add_arguments, argv)

    def body() -> int:
        settings = settings_from_args(args)
        if args.list_blocks:
            print(list_blocks(settings))
            return 0
        options = launch_options_from_args(args)  # validated before any work starts
        config = {**asdict(settings), "launcher": args.launcher, "job_per": args.job_per}
        with start_tracking(
            args.wandb, stage="feature_extraction", config=config, location=settings.location
        ) as tracker:
            start = time.perf_counter()
            report = _launch(settings, options, per_dataset=args.job_per == "model_dataset")
            written = [path for paths in report.results() for path in paths]
            tracker.log_metrics(
                {
                    "n_files_written": len(written),
                    "n_jobs": len(report.outcomes),
                    "n_jobs_failed": report.n_failed,
                    "seconds": time.perf_counter() - start,
                }
            )
            tracker.log_table("written_files", _written_rows(written))
        if args.launcher != "local":
            print(report.summary())
        print(
            f"feature_extraction: {len(written)} file(s) written under {settings.location.features}"
        )
        return 0 if report.is_success else 1

    return run_main(body)
