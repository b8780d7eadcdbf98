"""Model settings from -p KEY=VALUE and checkpoints: unknown keys and wrong types are one line that lists
what the model takes."""

from __future__ import annotations

import pytest

from geochange.errors import GeochangeError
from geochange.models import create_model
from geochange.models.config import make_config, settings
from geochange.models.cva import CVAConfig
from geochange.models.drlnet import DRLnetConfig


def test_unknown_key_lists_the_settings_and_their_types():
    with pytest.raises(GeochangeError, match=r"model cva has no setting 'foo'; it takes measure \(str\), "
                                             r"radius \(int\).*bins \(int\)") as err:
        create_model("cva", foo=1)
    assert "\n" not in str(err.value)


def test_wrong_types_name_the_key_and_its_type():
    with pytest.raises(GeochangeError, match=r"model cva: bins must be int, not 'abc'"):
        create_model("cva", bins="abc")
    with pytest.raises(GeochangeError, match="bins must be int, not 2.5"):
        create_model("cva", bins=2.5)
    with pytest.raises(GeochangeError, match="alpha must be float, not nan"):
        make_config("drlnet", DRLnetConfig, {"alpha": float("nan")})
    with pytest.raises(GeochangeError, match="schedule must be list of int"):
        make_config("drlnet", DRLnetConfig, {"schedule": ["a"]})
    with pytest.raises(GeochangeError, match="cva: unknown filter"):   # the config's own checks still run
        create_model("cva", filter="gauss")


def test_values_are_brought_to_the_field_types():
    cfg = make_config("drlnet", DRLnetConfig, {"alpha": 1, "schedule": [4, 3], "types": None})
    assert cfg.alpha == 1.0 and isinstance(cfg.alpha, float) and cfg.schedule == (4, 3) and cfg.types is None
    assert make_config("drlnet", DRLnetConfig, {"types": 3}).types == 3
    assert create_model("cva", bins=128).config.bins == 128


def test_settings_describes_optional_and_list_types():
    text = settings(DRLnetConfig)
    assert "types (int or none)" in text and "schedule (list of int)" in text
    assert settings(CVAConfig).startswith("measure (str), radius (int)")
