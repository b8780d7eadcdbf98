"""Detect models, by name. Each module holds one model: its network (if any), losses and config."""

from __future__ import annotations

import importlib

from geochange.errors import GeochangeError
from geochange.models.base import ChangeModel

#: name -> "module:Class"; imported lazily so that ``geochange --help`` stays fast.
MODELS: dict[str, str] = {
    "cdcluster": "geochange.models.cdcluster:CDCluster",
    "cva": "geochange.models.cva:CVA",
    "drlnet": "geochange.models.drlnet:DRLnet",
    "logistic": "geochange.models.logistic:MarksLogistic",
    "rscvae": "geochange.models.rscvae:RSCVAE",
    "vae": "geochange.models.vae:DisentangledVAE",
}


def model_class(name: str) -> type[ChangeModel]:
    """The class of the model called ``name``."""
    if name not in MODELS:
        raise GeochangeError(f"unknown model {name!r} (available: {', '.join(sorted(MODELS))})")
    module, cls_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls_name)


def create_model(name: str, device: str = "cpu", **config) -> ChangeModel:
    """Instantiate the model called ``name`` with its default (paper) configuration, overridden by ``config``."""
    from geochange.models.config import make_config

    cls = model_class(name)
    return cls(make_config(name, cls.config_class, config), device=device)


def learns_from_marks(name: str) -> bool:
    """Whether model ``name`` implements ``fit_marks`` (``detect --labels``, ``train --labels``)."""
    from geochange.models.base import TrainableModel

    cls = model_class(name)
    return issubclass(cls, TrainableModel) and cls.fit_marks is not TrainableModel.fit_marks


def marks_models() -> list[str]:
    """The models that learn from marks."""
    return [name for name in MODELS if learns_from_marks(name)]
