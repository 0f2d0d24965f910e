"""Metric slugs: the folder names of ``model_similarities/<dataset_slug>/<metric_slug>/``.

Rep2Rep's naming: ``cka_kernel_linear_unbiased``, ``cka_kernel_linear_biased``,
``cka_kernel_rbf_unbiased_sigma_0.4``, ``rsa_method_correlation_corr_method_spearman``,
``mknn_k_10``; σ relative to the median distance (our extension) reads
``cka_kernel_rbf_unbiased_sigma_median_0.5``.
"""

from __future__ import annotations

from sim_consistency.config.similarity import MetricSpec

__all__ = ["metric_slug"]


def _number(value: float) -> str:
    return f"{value:g}"


def metric_slug(spec: MetricSpec) -> str:
    """Return the slug of a metric (its folder name under ``model_similarities/<dataset>/``)."""
    if spec.sim_method == "cka":
        slug = f"cka_kernel_{spec.sim_kernel}_{'unbiased' if spec.unbiased else 'biased'}"
        if spec.sigma is not None:
            slug += f"_sigma_{_number(spec.sigma)}"
        if spec.sigma_median is not None:
            slug += f"_sigma_median_{_number(spec.sigma_median)}"
        return slug
    if spec.sim_method == "rsa":
        return f"rsa_method_{spec.rsa_method}_corr_method_{spec.corr_method}"
    return f"mknn_k_{spec.k}"
