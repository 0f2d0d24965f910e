"""The one Hugging Face hub lookup: endpoint, offline switch, cache folder, reachability probe.

Shared by the model sources (pretrained weights, :mod:`sim_consistency.models.sources._hub`)
and the dataset downloader (:mod:`sim_consistency.data.download`), so both honour the same
environment (``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, ``HF_HUB_CACHE``,
``HF_HOME``) read at call time, and both fail fast with one bounded request when offline.
"""

from __future__ import annotations

import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "DEFAULT_ENDPOINT",
    "hf_hub_cache_dir",
    "hub_endpoint",
    "hub_offline",
    "unreachable",
]

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "on", "yes", "true"}


def hub_endpoint() -> str:
    """Return the hub endpoint: ``$HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """Return whether the hub is switched off (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``).

    Also true when an imported ``huggingface_hub`` was started offline (it reads the variable
    once, at import).
    """
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    constants = sys.modules.get("huggingface_hub.constants")
    return flag.strip().lower() in _TRUE or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hf_hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder, from the environment as it is now.

    Same precedence as ``huggingface_hub``: ``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` >
    ``$HF_HOME/hub`` > ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub``. Read
    at call time (``huggingface_hub`` reads it once at import), so a changed ``HF_HOME`` counts.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])))
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = Path(xdg) / "huggingface"
    return home / "hub"


def unreachable(url: str, timeout_s: float, *, any_answer: bool = False) -> str | None:
    """Return why one HEAD request to ``url`` failed, or ``None`` when it succeeded.

    The request runs in a daemon thread joined with ``timeout_s``, so a hanging DNS lookup
    cannot delay the answer either. With ``any_answer`` an HTTP error status counts as success
    (the server answered: the host is reachable); without it a 404 means the file is not there.
    """
    outcome: dict[str, str | None] = {}

    def probe() -> None:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method="HEAD"), timeout=timeout_s
            ):
                pass
            outcome["error"] = None
        except urllib.error.HTTPError as exc:
            outcome["error"] = None if any_answer else f"HTTPError: {exc}"
        except Exception as exc:  # URLError, timeouts, DNS failures: all mean "not reachable"
            outcome["error"] = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome.get("error", f"no answer in {timeout_s:g} s")
