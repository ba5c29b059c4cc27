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


SAFE_INTEGER = 2**53 - 1  # RFC 8785 (JSON canonicalisation) represents integers up to this exactly


def json_number(value: Fraction) -> int | str:
    """An exact number as certificates and proofs carry it: an integer within ±(2^53 − 1) as a JSON
    number, any other value as its exact text (`"949999/100"`, or a larger integer's digits)."""
    if value.denominator == 1 and abs(value.numerator) <= SAFE_INTEGER:
        return value.numerator
    return str(value)
