"""The rate rule: a fixed service per destination country, else the cheapest allowed rate."""

from __future__ import annotations

from decimal import Decimal

import pytest

from consumers.carriers.base import NoRate, Rate
from consumers.carriers.rates import RateRule, Service, choose_rate

RATES = (
    Rate("rate_1", "USPS", "Express", Decimal("31.20"), "USD"),
    Rate("rate_2", "USPS", "Priority", Decimal("8.05"), "USD"),
    Rate("rate_3", "USPS", "GroundAdvantage", Decimal("5.98"), "USD"),
    Rate("rate_4", "UPS", "Ground", Decimal("9.40"), "USD"),
    Rate("rate_5", "DHLExpress", "ExpressWorldwide", Decimal("4.00"), "EUR"),
)


class TestChooseRate:
    def test_cheapest_of_all_when_nothing_is_configured(self):
        """No allowed list: every rate in the rule's currency competes."""
        assert "rate_3" == choose_rate(RATES, RateRule(), "US").id

    def test_cheapest_among_allowed_carriers_and_services(self):
        """USPS Priority and any UPS service allowed: UPS Ground loses to Priority on price."""
        rule = RateRule(allowed=(Service("USPS", "Priority"), Service("UPS")))
        assert "rate_2" == choose_rate(RATES, rule, "US").id

    def test_names_match_without_regard_to_case(self):
        """Config says "usps", EasyPost says "USPS"."""
        rule = RateRule(allowed=(Service("usps", "express"),))
        assert "rate_1" == choose_rate(RATES, rule, "US").id

    def test_a_fixed_service_for_the_country_wins_over_price(self):
        """Canada always goes UPS Ground, however cheap the rest is."""
        rule = RateRule(allowed=(Service("USPS"),), by_country={"CA": Service("UPS", "Ground")})
        assert "rate_4" == choose_rate(RATES, rule, "ca").id
        assert "rate_3" == choose_rate(RATES, rule, "US").id

    def test_a_fixed_service_not_offered_is_no_rate(self):
        """No fallback to another service: the order is held with the reason."""
        rule = RateRule(by_country={"GB": Service("USPS", "FirstClassInternational")})
        with pytest.raises(NoRate, match="FirstClassInternational"):
            choose_rate(RATES, rule, "GB")

    def test_nothing_allowed_offered_is_no_rate_listing_what_was(self):
        """The reason names the rule and what the carrier offered."""
        rule = RateRule(allowed=(Service("FedEx"),))
        with pytest.raises(NoRate, match="FedEx any service; offered: USPS Express 31.20"):
            choose_rate(RATES, rule, "US")

    def test_no_rates_at_all_is_no_rate(self):
        """A shipment with no rates (an address EasyPost could not rate) holds the order."""
        with pytest.raises(NoRate, match="offered: none"):
            choose_rate((), RateRule(), "US")

    def test_other_currencies_do_not_compete(self):
        """4.00 EUR is not cheaper than 5.98 USD; a EUR rule sees only the EUR rate."""
        assert "rate_3" == choose_rate(RATES, RateRule(), "US").id
        assert "rate_5" == choose_rate(RATES, RateRule(currency="EUR"), "DE").id

    def test_ties_break_the_same_way_every_time(self):
        """Two equal prices: the same choice whatever order the carrier listed them in."""
        tied = (Rate("rate_b", "UPS", "Ground", Decimal("5"), "USD"),
                Rate("rate_a", "USPS", "Ground", Decimal("5"), "USD"))
        assert choose_rate(tied, RateRule(), "US") == choose_rate(tied[::-1], RateRule(), "US")
        assert "rate_b" == choose_rate(tied, RateRule(), "US").id
