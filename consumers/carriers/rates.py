"""Which of a shipment's rates to buy: the configured rule, as a pure function.

Either a fixed service for the destination country (`by_country`), or else the cheapest rate
among the allowed carriers and services (`allowed`; empty allows every rate). Only rates in
the rule's currency compete: 5 EUR and 6 USD do not compare. Nothing matching is `NoRate`,
never a fallback to some other service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from consumers.carriers.base import NoRate, Rate


@dataclass(frozen=True)
class Service:
    """A carrier's service; `service` None stands for every service of that carrier."""

    carrier: str
    service: str | None = None

    def matches(self, rate: Rate) -> bool:
        return (rate.carrier.casefold() == self.carrier.casefold()
                and (self.service is None
                     or rate.service.casefold() == self.service.casefold()))


@dataclass(frozen=True)
class RateRule:
    allowed: tuple[Service, ...] = ()
    by_country: Mapping[str, Service] = field(default_factory=dict)  # ISO alpha-2 -> service
    currency: str = "USD"


def choose_rate(rates: Iterable[Rate], rule: RateRule, country: str) -> Rate:
    """The rate to buy for a parcel to `country`, or NoRate saying what was looked for."""
    every = tuple(rates)
    offered = [rate for rate in every if rate.currency.upper() == rule.currency.upper()]
    fixed = rule.by_country.get(country.upper())
    if fixed is not None:
        candidates = [rate for rate in offered if fixed.matches(rate)]
        wanted = f"{fixed.carrier} {fixed.service or 'any service'} (fixed for {country})"
    else:
        candidates = [rate for rate in offered
                      if not rule.allowed or any(s.matches(rate) for s in rule.allowed)]
        wanted = ("any rate" if not rule.allowed else ", ".join(
            f"{s.carrier} {s.service or 'any service'}" for s in rule.allowed))
    if not candidates:
        seen = ", ".join(f"{r.carrier} {r.service} {r.amount} {r.currency}" for r in every)
        raise NoRate(f"no rate in {rule.currency} matches {wanted}; offered: {seen or 'none'}")
    # ties go to a stable order, so two consumers choose the same rate for the same shipment
    return min(candidates, key=lambda r: (r.amount, r.carrier, r.service, r.id))
