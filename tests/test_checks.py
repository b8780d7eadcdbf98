"""Numeric options and band lists: finite, in range, each refusal one line naming the option."""

from __future__ import annotations

import pytest

from geochange.checks import check_bands, check_number
from geochange.errors import GeochangeError


@pytest.mark.parametrize("value, message", [
    (float("nan"), "--min-area must be a finite number"), (float("inf"), "must be a finite number"),
    (-5, "--min-area must be >= 0"), ("3", "must be a finite number"), (True, "must be a finite number")])
def test_bad_numbers_are_refused_naming_the_option(value, message):
    with pytest.raises(GeochangeError, match=message):
        check_number(value, "--min-area", low=0)


def test_good_numbers_pass_and_bounds_hold():
    check_number(None, "--x", low=0)
    check_number(0, "--x", low=0)
    check_number(1.0, "--x", low=0, high=1)
    with pytest.raises(GeochangeError, match="--x must be above 0"):
        check_number(0, "--x", low=0, low_open=True)
    with pytest.raises(GeochangeError, match="--x must be <= 1"):
        check_number(1.5, "--x", high=1)
    with pytest.raises(GeochangeError, match="--tile must be a whole number"):
        check_number(16.5, "--tile", integer=True)


def test_bands_once_each_from_one():
    check_bands([3, 1, 2])
    check_bands(None)
    with pytest.raises(GeochangeError, match="--bands 1,1,1: band 1 is given twice"):
        check_bands([1, 1, 1])
    with pytest.raises(GeochangeError, match="start at 1, not 0"):
        check_bands([0, 1])
