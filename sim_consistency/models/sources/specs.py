"""The registry of per-source spec classes, read by the models-config loader.

Every base source validates its own keys; adding one means adding its module and one
line here (plus its builder in ``MODEL_SOURCES``).
"""

from __future__ import annotations

from sim_consistency.models.sources._spec import SourceSpec
from sim_consistency.models.sources.checkpoint import CheckpointSpec
from sim_consistency.models.sources.custom import CustomSpec
from sim_consistency.models.sources.hf import HfSpec
from sim_consistency.models.sources.open_clip import OpenClipSpec
from sim_consistency.models.sources.python import PythonSpec
from sim_consistency.models.sources.ssl_models import SslSpec
from sim_consistency.models.sources.timm import TimmSpec
from sim_consistency.models.sources.torchvision import TorchvisionSpec

__all__ = ["SOURCE_SPECS"]

#: ``source`` -> its spec class: every base source validates its own keys in its module.
SOURCE_SPECS: dict[str, type[SourceSpec]] = {
    "timm": TimmSpec,
    "open_clip": OpenClipSpec,
    "checkpoint": CheckpointSpec,
    "torchvision": TorchvisionSpec,
    "python": PythonSpec,
    "ssl": SslSpec,
    "custom": CustomSpec,
    "hf": HfSpec,
}
