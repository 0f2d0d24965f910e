"""The registry of per-source spec classes, read by the models-config loader.

A source with a spec class validates its own keys; adding one means adding its module and one
line here (plus its builder in ``MODEL_SOURCES``).
"""

from __future__ import annotations

from sim_consistency.models.sources._spec import SourceSpec
from sim_consistency.models.sources.custom import CustomSpec
from sim_consistency.models.sources.hf import HfSpec
from sim_consistency.models.sources.python import PythonSpec
from sim_consistency.models.sources.ssl_models import SslSpec
from sim_consistency.models.sources.torchvision import TorchvisionSpec

__all__ = ["SOURCE_SPECS"]

#: ``source`` -> its spec class (the sources whose keys are validated by their own module).
SOURCE_SPECS: dict[str, type[SourceSpec]] = {
    "torchvision": TorchvisionSpec,
    "python": PythonSpec,
    "ssl": SslSpec,
    "custom": CustomSpec,
    "hf": HfSpec,
}
