"""Exact numbers: JSON numbers as rationals, read as the decimal they are written as."""

from __future__ import annotations

from fractions import Fraction


def exact(value: int | float | Fraction) -> Fraction:
    """The rational a JSON number denotes: `0.1` is 1/10, not the binary double nearest it.

    A float's `repr` is the shortest decimal that reads back as the same double, which is the
    decimal a JSON document wrote, so policy literals and request values compare alike.
    """
    if isinstance(value, float):
        return Fraction(repr(value))
    return Fraction(value)
