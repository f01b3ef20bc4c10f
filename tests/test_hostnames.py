"""controlplane.gatewayapi.hostnames: listener × route hostname intersection and listener isolation,
case by case from the Gateway API spec (Listener.hostname, HTTPRoute.hostnames)."""

from __future__ import annotations

import pytest

from controlplane.gatewayapi.hostnames import intersect, matches, more_specific, owned_by


@pytest.mark.parametrize(
    "pattern, host, expected",
    [
        (None, "anything.example.com", True),
        ("foo.example.com", "foo.example.com", True),
        ("foo.example.com", "bar.example.com", False),
        ("*.example.com", "foo.example.com", True),
        ("*.example.com", "a.b.example.com", True),  # a wildcard covers one or more labels
        ("*.example.com", "example.com", False),  # ... but not the bare domain
        ("*.example.com", "fooexample.com", False),  # label boundary, not a string suffix
        ("*.example.com", ".example.com", False),
    ],
)
def test_matches(pattern: str | None, host: str, expected: bool) -> None:
    assert matches(pattern, host) is expected


@pytest.mark.parametrize(
    "listener, route, expected",
    [
        (None, [], ["*"]),  # neither restricts
        ("foo.example.com", [], ["foo.example.com"]),  # the listener's alone
        (None, ["a.example.com", "*.b.com"], ["a.example.com", "*.b.com"]),
        ("foo.example.com", ["foo.example.com"], ["foo.example.com"]),
        ("foo.example.com", ["bar.example.com"], []),  # NoMatchingListenerHostname
        ("*.example.com", ["foo.example.com", "foo.other.com"], ["foo.example.com"]),
        ("foo.example.com", ["*.example.com"], ["foo.example.com"]),  # the exact side wins
        ("*.example.com", ["*.foo.example.com"], ["*.foo.example.com"]),  # the narrower wildcard
        ("*.foo.example.com", ["*.example.com"], ["*.foo.example.com"]),
        ("*.example.com", ["*.other.com"], []),
        ("*.example.com", ["a.example.com", "a.example.com"], ["a.example.com"]),  # no duplicates
    ],
)
def test_intersect(listener: str | None, route: list[str], expected: list[str]) -> None:
    assert intersect(listener, route) == expected


def test_more_specific_orders_exact_then_longer_wildcard_then_none() -> None:
    assert more_specific("foo.example.com", "*.example.com")
    assert more_specific("*.foo.example.com", "*.example.com")
    assert more_specific("*.example.com", None)
    assert more_specific("foo.example.com", None)
    assert not more_specific(None, "*.example.com")
    assert not more_specific("*.example.com", "foo.example.com")
    assert not more_specific("*.example.com", "*.example.com")
    assert not more_specific("a.example.com", "b.example.com")  # two exact names: neither


def test_a_more_specific_sibling_takes_its_hostnames_away() -> None:
    """GatewayHTTPListenerIsolation: on one port, a request goes to the most specific listener."""
    siblings = [None, "*.example.com", "foo.example.com"]
    # The catch-all listener keeps what no sibling covers, loses what one does.
    assert owned_by("other.com", None, siblings)
    assert not owned_by("bar.example.com", None, siblings)
    assert not owned_by("foo.example.com", None, siblings)
    # The wildcard listener loses only the exact name a sibling has.
    assert owned_by("bar.example.com", "*.example.com", siblings)
    assert not owned_by("foo.example.com", "*.example.com", siblings)
    assert owned_by("foo.example.com", "foo.example.com", siblings)
    # A wildcard hostname is taken away only by a sibling with exactly that wildcard.
    assert owned_by("*.a.example.com", None, ["*.b.example.com", None])
    assert not owned_by("*.example.com", None, siblings)
