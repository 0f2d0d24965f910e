"""A faithful re-implementation of Rep2Rep's linear-probe search, for side-by-side tests.

Re-typed (not imported: Rep2Rep is not a dependency) from the public code of
``lciernik/similarity_consistency`` (MIT), keeping its control flow, its data loaders and its
use of the global random state:

* ``sim_consistency/tasks/linear_probe_evaluator.py`` — ``BaseEvaluator._create_train_val_loaders``
  (``train_test_split(arange(n), test_size=val_proportion, stratify=targets,
  random_state=seed)``, ``Subset`` loaders with ``shuffle=True``) and ``optimize_hyperparams``;
* ``sim_consistency/tasks/hyperparameter_tuner.py`` — ``HyperparameterTuner.tune`` (learning
  rates in order; ``if max_acc < acc1``);
* ``sim_consistency/tasks/regularization_tuner.py`` — ``RegularizationTuner.tune_lambda`` and
  ``find_peak`` (64-point grid ``logspace(-6, 1)``, 8 coarse points, spans 4 → 2 → 1, the peak
  never re-tested, ``if max_acc <= acc1`` inside a batch, ``if new_acc1 > acc1`` to move);
* ``sim_consistency/tasks/linear_probe.py`` — ``LinearProbe.train`` (``torch.manual_seed(seed)``,
  ``nn.Linear``, ``AdamW(lr, weight_decay=reg.get_lambda())``, per-step cosine schedule with
  ``np.cos`` and no warm-up, ``Regularizer`` for L1/L2 on non-bias parameters) and ``infer``;
* ``sim_consistency/eval/metrics.py`` — ``accuracy`` (top-k count / n).

Only the CPU path is re-typed (``DataParallel`` over no GPU is the bare layer); features are
used as given (Rep2Rep's are L2-normalised at extraction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset


class FeatureDataset(Dataset):
    """Rep2Rep's ``FeatureDataset``: rows and ``targets``."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features = features
        self.targets = targets

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self.targets[i]


class SubsetWithTargets(Subset):
    """Rep2Rep's ``SubsetWithTargets``: a ``Subset`` that keeps ``targets``."""

    def __init__(self, dataset: FeatureDataset, indices) -> None:
        super().__init__(dataset, indices)
        self.targets = dataset.targets[torch.as_tensor(np.asarray(indices))]


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    pred = output.topk(k=1, dim=1, largest=True, sorted=True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    # Rep2Rep: float(….sum(0, keepdim=True).cpu().numpy()) / n; numpy 2.4 refuses float() of
    # a 1-element array, so the element is taken with .item() (the same number).
    return correct[:1].reshape(-1).float().sum(0, keepdim=True).cpu().item() / len(target)


def train_probe(
    loader: DataLoader, *, lr: float, reg_lambda: float, epochs: int, seed: int,
    regularization: str = "weight_decay",
) -> torch.nn.Linear:  # fmt: skip
    """``LinearProbe.train`` on the CPU."""
    torch.manual_seed(seed)
    n_in = loader.dataset[0][0].shape[0]
    n_out = int(loader.dataset.targets.max().item()) + 1
    model = torch.nn.Linear(n_in, n_out)
    decay = reg_lambda if regularization == "weight_decay" else 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    criterion = torch.nn.CrossEntropyLoss()
    len_loader = len(loader)
    steps = epochs * len_loader
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            step = i + epoch * len_loader
            for group in optimizer.param_groups:  # cosine_lr, warmup_length 0.
                group["lr"] = 0.5 * (1 + np.cos(np.pi * (step - 0.0) / (steps - 0.0))) * lr
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            if regularization != "weight_decay":
                f = (
                    (lambda p: torch.sum(torch.abs(p)))
                    if regularization == "L1"
                    else (lambda p: torch.sum(p**2))
                )
                loss += reg_lambda * sum(
                    f(p) for n, p in model.named_parameters() if "bias" not in n
                )
            loss.backward()
            optimizer.step()
    return model


def infer(model: torch.nn.Linear, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    pred, true = [], []
    with torch.no_grad():
        for x, y in loader:
            pred.append(model(x))
            true.append(y)
    return torch.cat(pred), torch.cat(true)


@dataclass
class Rep2RepSearch:
    """What Rep2Rep's search chose, and every validation accuracy it measured."""

    lr: float
    reg_lambda: float
    scored: dict[tuple[float, float], float] = field(default_factory=dict)
    train_indices: np.ndarray | None = None
    val_indices: np.ndarray | None = None


def rep2rep_search(
    features: np.ndarray, targets: np.ndarray, *, seed: int, lrs=(0.1, 0.01, 0.001, 0.0001),
    epochs: int = 20, batch_size: int = 1024, val_proportion: float = 0.2,
    regularization: str = "weight_decay",
) -> Rep2RepSearch:  # fmt: skip
    """``BaseEvaluator.optimize_hyperparams`` with ``val_proportion > 0``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # cli.run: set_all_random_seeds(args.seed)
        data = FeatureDataset(torch.as_tensor(features), torch.as_tensor(targets))
        train_idx, val_idx = train_test_split(
            np.arange(len(targets)), test_size=val_proportion, stratify=targets,
            random_state=seed,
        )  # fmt: skip
        train_loader = DataLoader(
            SubsetWithTargets(data, train_idx), batch_size=batch_size, shuffle=True
        )
        val_loader = DataLoader(
            SubsetWithTargets(data, val_idx), batch_size=batch_size, shuffle=True
        )
        result = Rep2RepSearch(0.0, 0.0, train_indices=train_idx, val_indices=val_idx)

        def find_peak(lr, lambda_list, idxs):
            best_idx, max_acc = 0, 0
            for idx in idxs:
                model = train_probe(
                    train_loader, lr=lr, reg_lambda=lambda_list[idx], epochs=epochs, seed=seed,
                    regularization=regularization,
                )  # fmt: skip
                logits, target = infer(model, val_loader)
                acc1 = accuracy(logits.float(), target.float())
                result.scored[(lr, lambda_list[idx])] = acc1
                if max_acc <= acc1:
                    best_idx, max_acc = idx, acc1
            return best_idx, max_acc

        def tune_lambda(lr, min_exp=-6, max_exp=1):
            num_init = max_exp - min_exp + 1
            lambda_list_init = np.logspace(min_exp, max_exp, num=num_init).tolist()
            lambda_list = np.logspace(
                min_exp, max_exp, num=(num_init + (num_init - 1) * 8)
            ).tolist()
            lambda_init_idx = [lambda_list.index(val) for val in lambda_list_init]
            peak_idx, acc1 = find_peak(lr, lambda_list, lambda_init_idx)
            step_span = 4
            while step_span > 0:
                left = max(peak_idx - step_span, 0)
                right = min(peak_idx + step_span, len(lambda_list) - 1)
                idxs_to_test = [idx for idx in [left, right] if idx != peak_idx]
                if len(idxs_to_test) == 0:
                    break
                new_peak_idx, new_acc1 = find_peak(lr, lambda_list, idxs_to_test)
                if new_acc1 > acc1:
                    acc1, peak_idx = new_acc1, new_peak_idx
                step_span //= 2
            return lambda_list[peak_idx], acc1

        max_acc = 0
        for lr in lrs:
            reg_lambda, acc1 = tune_lambda(lr)
            if max_acc < acc1:
                result.lr, result.reg_lambda, max_acc = lr, reg_lambda, acc1
    return result


def rep2rep_fit(
    features: np.ndarray, targets: np.ndarray, *, lr: float, reg_lambda: float, seed: int,
    epochs: int = 20, batch_size: int = 1024, regularization: str = "weight_decay",
) -> torch.nn.Linear:  # fmt: skip
    """The final fit of ``BaseEvaluator._evaluate``: all training rows, ``shuffle=True``."""
    with torch.random.fork_rng(devices=[]):
        data = FeatureDataset(torch.as_tensor(features), torch.as_tensor(targets))
        loader = DataLoader(data, batch_size=batch_size, shuffle=True)
        return train_probe(
            loader, lr=lr, reg_lambda=reg_lambda, epochs=epochs, seed=seed,
            regularization=regularization,
        )  # fmt: skip
