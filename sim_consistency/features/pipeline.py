"""Feature extraction's work: plan a model's cache files, fill one, run a model's outputs.

The stage (:mod:`sim_consistency.stages.feature_extraction`) holds the flags and the launch;
this module holds what needs torch: :func:`plan_model` computes each output's content key
(weights digest, recipe, preprocessing, pooling, blocks, rows) and keeps the outputs that are
missing, stale or invalid (all with ``--force``); :func:`extract_to_cache` fills one file through
:class:`~sim_consistency.features.BlockExtractor` and :func:`~sim_consistency.io.atomic_output`,
so an interrupted run leaves no file a reader accepts.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

import sim_consistency
from sim_consistency.config import ModelSpec, load_models_config
from sim_consistency.data import ImageDataset, Sample, collate_samples, load_dataset
from sim_consistency.data.wds import EncodedImages, collate_encoded
from sim_consistency.device import resolve_device
from sim_consistency.errors import ConfigError
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
from sim_consistency.models import REP2REP_BLOCK, LoadedModel, create_model
from sim_consistency.outputs import plan_reason
from sim_consistency.progress import progress_bar
from sim_consistency.stages.feature_extraction import WorkItem
from sim_consistency.threads import threads_metadata

if TYPE_CHECKING:
    from sim_consistency.stages.feature_extraction import ExtractionSettings

__all__ = [
    "block_specs",
    "ensure_variant",
    "extract_to_cache",
    "model_dataset",
    "plan_model",
    "plan_outputs",
    "run_model",
    "stored_blocks",
    "written_rows",
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


def stored_blocks(loaded: LoadedModel) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Stored block names, their pooling and widths (Rep2Rep's representation included)."""
    names = list(loaded.block_names)
    pooling = dict(loaded.block_pooling)
    dims = {info.name: info.dim for info in loaded.blocks}
    if loaded.rep2rep is not None:
        names.append(REP2REP_BLOCK)
        pooling[REP2REP_BLOCK] = f"rep2rep:{loaded.rep2rep.pooling}+l2"
        dims[REP2REP_BLOCK] = loaded.rep2rep.dim
    return names, pooling, dims


def library_versions() -> dict[str, str]:
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
    as missing; ``--verify`` reads every existing cache in full now instead. A ``.partial``
    left by a killed run is removed here (unless a live writer holds it), even when the output
    itself is up to date.
    """
    block_names, pooling, _ = stored_blocks(loaded)
    items: list[WorkItem] = []
    for dataset in settings.datasets:
        for split in settings.splits:
            data = model_dataset(settings, dataset, split)
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
            if status is not None and status.problem not in (None, "no such file"):
                reason: str | None = "invalid"
                log.warning("%s: %s; rebuilding", output, status.problem)
            else:
                attrs = None if status is None else status.attrs
                stored = None if attrs is None else str(attrs.get("content_key"))
                reason = plan_reason(output, key, stored, force=settings.force)
                corrupt = output.with_name(output.name + CORRUPT_SUFFIX)
                if reason == "missing" and corrupt.exists():
                    log.warning(
                        "%s: rebuilding the cache that a reader found corrupt (set aside as %s)",
                        output,
                        corrupt.name,
                    )
            if reason is None:
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
                "library_versions": library_versions(),
                "metadata": json.dumps(dict(spec.metadata), default=str),
            }
            items.append(WorkItem(spec.model_id, dataset, split, output, key, reason, attrs))
    return items


def model_dataset(
    settings: ExtractionSettings, dataset: str, split: str, transform=None
) -> ImageDataset:
    """Return one dataset split's rows as the settings select them (subset, cap, seed)."""
    return load_dataset(
        dataset,
        split,
        location=settings.location,
        transform=transform,
        max_samples=settings.max_samples,
        per_class_cap=settings.per_class_cap,
        seed=settings.subset_seed,
    )


def ensure_variant(
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


def plan_outputs(settings: ExtractionSettings) -> list[WorkItem]:
    """Return every output to build (builds each model on the CPU to read its content key)."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    items: list[WorkItem] = []
    for model_id in settings.model_ids:
        ensure_variant(settings, specs, model_id)
        loaded = create_model(specs[model_id], specs, device="cpu", location=settings.location)
        items.extend(plan_model(settings, specs[model_id], loaded))
    return items


def extract_to_cache(
    settings: ExtractionSettings, item: WorkItem, loaded: LoadedModel, *, progress: bool = True
) -> Path:
    """Extract one model on one dataset split into ``item.output`` (atomically)."""
    blocks = block_specs(loaded)
    decoder = _device_decoder(settings, loaded)
    data = model_dataset(settings, item.dataset, item.split, transform=loaded.transform)
    # ImageDataset is map-style (__len__ / __getitem__), all a DataLoader uses of a Dataset.
    loader: torch.utils.data.DataLoader[Sample] = torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Sample]", EncodedImages(data) if decoder else data),
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.num_workers or 0,
        collate_fn=collate_encoded if decoder else collate_samples,
        pin_memory=loaded.device.type == "cuda",
        persistent_workers=False,
    )
    _, _, dims = stored_blocks(loaded)
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
                    decoder.batches(ordered_batches(loader))
                    if decoder
                    else ordered_batches(loader),
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


def ordered_batches(loader: torch.utils.data.DataLoader):
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
    ensure_variant(settings, specs, model_id)
    loaded = create_model(specs[model_id], specs, device=device, location=settings.location)
    items = plan_model(settings, specs[model_id], loaded)
    return [extract_to_cache(settings, item, loaded, progress=progress) for item in items]


def written_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
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
