"""Envoy's ``FractionalPercent`` (numerator over HUNDRED, TEN_THOUSAND or MILLION)."""

from __future__ import annotations

from proxy.config.errors import ConfigError

_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


class Fraction:
    """A compiled FractionalPercent; ``hit(random_value)`` decides with one modulo, like Envoy's
    ``ProtobufPercentHelper::evaluateFractionalPercent`` (random % denominator < numerator)."""

    __slots__ = ("numerator", "denominator")

    def __init__(self, numerator: int, denominator: int) -> None:
        self.numerator = min(numerator, denominator)  # above 100% means 100%
        self.denominator = denominator

    @classmethod
    def from_proto(cls, msg, path: str) -> Fraction:
        denom = _DENOMINATORS.get(msg.denominator)
        if denom is None:
            raise ConfigError(f"{path}.denominator", f"unknown denominator {msg.denominator}")
        return cls(msg.numerator, denom)

    @classmethod
    def always(cls) -> Fraction:
        return cls(100, 100)

    def with_numerator(self, numerator: int) -> Fraction:
        """The same denominator with a smaller numerator (never above this one), as Envoy applies the
        x-envoy-fault-*-percentage headers."""
        return Fraction(min(numerator, self.numerator), self.denominator)

    def hit(self, random_value: int) -> bool:
        if self.numerator <= 0:
            return False
        if self.numerator >= self.denominator:
            return True
        return random_value % self.denominator < self.numerator

    def __repr__(self) -> str:
        return f"Fraction({self.numerator}/{self.denominator})"
