"""Device choice: auto picks CUDA only where torch sees a GPU; cuda is refused clearly where it does not."""

import pytest
import torch

from geochange.device import resolve_device
from geochange.errors import GeochangeError


def test_auto_and_cpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"


def test_cuda_request():
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(GeochangeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_unknown_device():
    with pytest.raises(GeochangeError, match="unknown device"):
        resolve_device("tpu")
