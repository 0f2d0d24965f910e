"""Rep2Rep's stored outputs come in (sim_consistency/stages/import_rep2rep.py): a feature folder
becomes a cache (rows and order kept, content-keyed) that the similarity stage reads, and its
similarity matrices feed our consistency stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sim_consistency.data import load_dataset
from sim_consistency.features import open_cache
from sim_consistency.similarity import cka
from sim_consistency.stages import consistency, distance_matrix_computation, import_rep2rep

R2R_CONFIG = Path(__file__).parents[1] / "fixtures" / "rep2rep" / "models_config_wo_alignment.json"
IDS = ["resnet50", "vgg16", "dino-vit-base-p16"]


@pytest.fixture
def rep2rep_models(tmp_path: Path) -> Path:
    raw = json.loads(R2R_CONFIG.read_text())
    path = tmp_path / "r2r_models.json"
    path.write_text(json.dumps({k: raw[k] for k in IDS}))
    return path


def _rep2rep_features(root: Path, labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Write Rep2Rep's layout: features/<ds>/<model>/{features,targets}_test.pt."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, model_id in enumerate(IDS):
        x = rng.normal(size=(len(labels), 8 + 4 * i)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        folder = root / "features" / "wds_digits" / model_id
        folder.mkdir(parents=True)
        torch.save(torch.from_numpy(x), folder / "features_test.pt")
        torch.save(torch.from_numpy(labels), folder / "targets_test.pt")
        out[model_id] = x
    return out


def test_feature_folders_import_and_feed_the_similarity_stage(
    project, tmp_path: Path, rep2rep_models: Path
) -> None:
    rows = load_dataset("wds/digits", "test", location=project)
    labels = np.asarray(rows.labels, dtype=np.int64)
    r2r = tmp_path / "rep2rep_root"
    features = _rep2rep_features(r2r, labels, seed=0)
    args = ["features", "--project_root", str(project.root), "--rep2rep_root", str(r2r)]
    args += ["--datasets", "wds/digits", "--splits", "test"]
    assert import_rep2rep.main(args) == 0
    for model_id, x in features.items():
        with open_cache(project.feature_file("wds/digits", "test", model_id)) as cache:
            assert cache.block_names == ["rep2rep"]
            np.testing.assert_array_equal(cache.block("rep2rep"), x)  # float32, same order
            assert cache.keys.tolist() == list(rows.keys)  # aligned with the local dataset
            assert cache.labels.tolist() == labels.tolist()
    path = project.feature_file("wds/digits", "test", "vgg16")
    mtime = path.stat().st_mtime_ns
    assert import_rep2rep.main(args) == 0
    assert path.stat().st_mtime_ns == mtime  # content key unchanged: skipped
    sim = ["--project_root", str(project.root), "--models_config", str(rep2rep_models)]
    sim += ["--datasets", "wds/digits", "--split", "test", "--similarity_config"]
    config = tmp_path / "sim.json"
    config.write_text(json.dumps([{"sim_method": "cka", "sim_kernel": "linear"}]))
    assert distance_matrix_computation.main([*sim, str(config)]) == 0
    folder = project.similarity_dir("wds/digits", "cka_kernel_linear_unbiased")
    frame = pd.read_csv(folder / "similarity_matrix.csv", index_col="model_id")
    expected = cka(features["resnet50"], features["vgg16"], unbiased=True)
    assert frame.loc["resnet50", "vgg16"] == pytest.approx(expected, abs=1e-9)


def test_labels_that_contradict_the_local_dataset_are_refused(project, tmp_path: Path) -> None:
    rows = load_dataset("wds/digits", "test", location=project)
    labels = np.asarray(rows.labels, dtype=np.int64)[::-1].copy()
    r2r = tmp_path / "rep2rep_root"
    _rep2rep_features(r2r, labels, seed=1)
    args = ["features", "--project_root", str(project.root), "--rep2rep_root", str(r2r)]
    assert import_rep2rep.main([*args, "--datasets", "wds/digits", "--splits", "test"]) == 2
    assert not project.feature_file("wds/digits", "test", "vgg16").exists()


def test_similarity_matrices_import_and_feed_consistency(
    project, tmp_path: Path, rep2rep_models: Path
) -> None:
    r2r = tmp_path / "rep2rep_root"
    rng = np.random.default_rng(3)
    matrices = {}
    for dataset in ("wds_digits", "wds_other"):
        m = rng.uniform(size=(3, 3))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        folder = r2r / "model_similarities" / dataset / "cka_kernel_linear_unbiased"
        folder.mkdir(parents=True)
        torch.save(torch.from_numpy(m), folder / "similarity_matrix.pt")
        (folder / "model_ids.txt").write_text("\n".join(IDS) + "\n")
        matrices[dataset] = m
    args = ["similarities", "--project_root", str(project.root), "--rep2rep_root", str(r2r)]
    assert import_rep2rep.main([*args, "--datasets", "wds/digits", "wds/other"]) == 0
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps([{"sim_method": "cka", "sim_kernel": "linear"}]))
    code = consistency.main(
        [
            "--project_root",
            str(project.root),
            "--models_config",
            str(rep2rep_models),
            "--datasets",
            "wds/digits",
            "wds/other",
            "--similarity_config",
            str(sim),
        ]
    )
    assert code == 0
    table = pd.read_csv(
        project.consistency
        / "cka_kernel_linear_unbiased"
        / "all_pairs"
        / "consistency_pearson.csv",
        index_col=0,
    )
    iu = np.triu_indices(3, k=1)
    expected = np.corrcoef(matrices["wds_digits"][iu], matrices["wds_other"][iu])[0, 1]
    assert table.iloc[0, 1] == pytest.approx(expected, abs=1e-12)


def test_similarity_matrix_without_model_ids_is_refused(project, tmp_path: Path) -> None:
    folder = tmp_path / "r2r" / "model_similarities" / "wds_digits" / "mknn_k_10"
    folder.mkdir(parents=True)
    torch.save(torch.eye(3), folder / "similarity_matrix.pt")
    args = ["similarities", "--project_root", str(project.root), "--rep2rep_root"]
    assert import_rep2rep.main([*args, str(tmp_path / "r2r"), "--datasets", "wds/digits"]) == 2


def _numpy1_pickle(path: Path, matrix: np.ndarray) -> None:
    """``torch.save`` of an ndarray as Rep2Rep writes it under numpy 1 (``numpy.core`` names)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save(matrix, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w") as out:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            out.writestr(name, data)
    assert (
        "numpy.core.multiarray._reconstruct"
        in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    )


@pytest.mark.parametrize("numpy1", [False, True])
def test_rep2reps_numpy_pickled_matrices_import(project, tmp_path: Path, numpy1: bool) -> None:
    """Rep2Rep saves ``compute_similarity_matrix``'s float64 ndarray, not a tensor."""
    m = np.array([[1.0, 0.3, 0.2], [0.3, 1.0, 0.5], [0.2, 0.5, 1.0]])
    folder = tmp_path / "r2r" / "model_similarities" / "wds_digits" / "rsa_method_cosine"
    folder.mkdir(parents=True)
    if numpy1:
        _numpy1_pickle(folder / "similarity_matrix.pt", m)
    else:
        torch.save(m, folder / "similarity_matrix.pt")
    (folder / "model_ids.txt").write_text("\n".join(IDS) + "\n")
    args = ["similarities", "--project_root", str(project.root), "--rep2rep_root"]
    assert import_rep2rep.main([*args, str(tmp_path / "r2r"), "--datasets", "wds/digits"]) == 0
    from sim_consistency.similarity.matrix_files import read_similarity_matrix

    back = read_similarity_matrix(project.similarity_dir("wds/digits", "rsa_method_cosine"))
    np.testing.assert_array_equal(back.to_numpy(), m)
    assert list(back.index) == IDS
