"""Each console route's role, declared in ROUTES: a role that is not one of ROLES (a typo
would make an operator's route everyone's) stops the app from being built."""

from __future__ import annotations

import pytest

from router.console.app import ROLES, ROUTES, _with_role


def test_every_route_names_a_known_role():
    """Every route in the table declares one of the roles."""
    assert {role for _, _, _, role in ROUTES} <= set(ROLES)


def test_an_unknown_role_is_refused_when_the_routes_are_added():
    """"operater" is no role: ValueError naming it and the handler."""
    handler = ROUTES[0][2]
    with pytest.raises(ValueError, match=r"unknown role 'operater' for login_page"):
        _with_role("operater", handler)
