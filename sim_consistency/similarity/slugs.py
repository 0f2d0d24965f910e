"""Metric slugs: the folder names of ``model_similarities/<dataset_slug>/<metric_slug>/``.

Exactly Rep2Rep's names (``CKAModelSimilarity.get_name`` / ``RSAModelSimilarity.get_name`` in
``lciernik/similarity_consistency``, ``sim_consistency/tasks/model_similarity.py``):
``cka_kernel_linear_unbiased``, ``cka_kernel_linear_biased``, ``cka_kernel_rbf_unbiased_sigma_0.4``
and ``…_sigma_1.0`` (σ as Python prints a float), ``rsa_method_correlation_corr_method_spearman``,
and ``rsa_method_cosine`` for cosine RDMs (whatever the RDM correlation: Rep2Rep's name omits it,
so a config may hold only one cosine RSA entry). Our extensions: ``mknn_k_10`` and σ relative to
the median distance, ``cka_kernel_rbf_unbiased_sigma_median_0.5``.

Slugs before Rep2Rep's exact names (:func:`legacy_metric_slugs`: σ printed with ``:g``, so
``sigma_1`` for 1.0; cosine RSA with ``_corr_method_<m>``) are migrated in place — renamed to
the current slug — by the similarity stages when they meet one
(:func:`sim_consistency.stages._similarity_io.similarity_folder`).
"""

from __future__ import annotations

from sim_consistency.config.similarity import MetricSpec

__all__ = ["legacy_metric_slugs", "metric_slug"]


def metric_slug(spec: MetricSpec) -> str:
    """Return the slug of a metric (its folder name under ``model_similarities/<dataset>/``)."""
    if spec.sim_method == "cka":
        slug = f"cka_kernel_{spec.sim_kernel}_{'unbiased' if spec.unbiased else 'biased'}"
        if spec.sigma is not None:
            slug += f"_sigma_{float(spec.sigma)}"  # Rep2Rep: f"_sigma_{sigma}", sigma a float
        if spec.sigma_median is not None:
            slug += f"_sigma_median_{spec.sigma_median:g}"
        return slug
    if spec.sim_method == "rsa":
        if spec.rsa_method == "cosine":
            return "rsa_method_cosine"
        return f"rsa_method_{spec.rsa_method}_corr_method_{spec.corr_method}"
    return f"mknn_k_{spec.k}"


def legacy_metric_slugs(spec: MetricSpec) -> list[str]:
    """Return the older slugs of ``spec`` that differ from :func:`metric_slug` (newest first)."""
    if spec.sim_method == "cka" and spec.sigma is not None:
        old = f"cka_kernel_{spec.sim_kernel}_{'unbiased' if spec.unbiased else 'biased'}"
        old += f"_sigma_{spec.sigma:g}"
        if spec.sigma_median is not None:
            old += f"_sigma_median_{spec.sigma_median:g}"
        return [old] if old != metric_slug(spec) else []
    if spec.sim_method == "rsa" and spec.rsa_method == "cosine":
        return [f"rsa_method_cosine_corr_method_{spec.corr_method}"]
    return []
