"""Gateway API mirror fractions as Envoy FractionalPercents: exact where Envoy's denominators
allow, rounded to the nearest millionth elsewhere (tests/mutation.py flips each of these)."""

from __future__ import annotations

import pytest
from envoy.type.v3 import percent_pb2

from controlplane.xds.translator import fractional_percent

FP = percent_pb2.FractionalPercent


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (25, 50, (50, FP.HUNDRED)),
        (1, 8, (1250, FP.TEN_THOUSAND)),
        (3, 10_000, (3, FP.TEN_THOUSAND)),
        (7, 1_000_000, (7, FP.MILLION)),
        (1, 3, (333_333, FP.MILLION)),  # 0.3333333 rounds down
        (2, 3, (666_667, FP.MILLION)),  # 0.6666667 rounds up, not truncated
        (1, 7_000_000, (0, FP.MILLION)),
        (1, 2_000_000, (1, FP.MILLION)),  # exactly half a millionth rounds up
    ],
)
def test_fraction(numerator: int, denominator: int, expected: tuple[int, int]) -> None:
    got = fractional_percent(numerator, denominator)
    assert got is not None and (got.numerator, got.denominator) == expected


@pytest.mark.parametrize(("numerator", "denominator"), [(100, 100), (9, 9), (1, 1)])
def test_everything_is_no_fraction(numerator: int, denominator: int) -> None:
    assert fractional_percent(numerator, denominator) is None
