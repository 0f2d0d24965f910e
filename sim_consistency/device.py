"""The one device resolver: ``--device`` / ``device=`` strings to a torch device, checked.

torch is imported on the first call, not at import, so that parsing flags stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim_consistency.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Return the torch device for ``device`` (``auto``: CUDA when available, else CPU).

    Raises:
        ConfigError: an unknown device name, or CUDA asked for on a machine without it.
    """
    import torch

    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(
                f"device: unknown device {device!r}. Use auto, cpu, cuda or cuda:N."
            ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {str(device)!r}: CUDA is not available on this machine; use cpu or auto."
        )
    return resolved
