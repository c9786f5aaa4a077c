"""Fixtures for the companion plugin tests: the KiviCare sandbox with the plugin emulated, a client."""

from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from sandbox.kivicare_seed import business_day
from wp_bridge.companion import CompanionClient

SECRET = "rL9qv0m1N2b3V4c5X6z7A8s9D0f1G2h3J4k5L6p7Q8w"
PARIS = ZoneInfo("Europe/Paris")
ANNA, MARC = 3, 4
LOUIS, EMMA = 5, 6
ANNA_GENERAL, ANNA_EXTENDED = 1, 6  # doctor-service mapping ids (30 and 45 minutes)


def free_day():
    """A weekday on which the seed gives Anna no appointment (7 business days ahead, Paris)."""
    return business_day(datetime.now(PARIS).date(), 7)


def at(hhmm: str, day=None) -> datetime:
    """``day`` (default ``free_day()``) at local Paris ``hhmm``, as an aware UTC datetime."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime.combine(day or free_day(), time(hours, minutes), PARIS).astimezone(timezone.utc)


@pytest.fixture
def plugin():
    """The KiviCare sandbox with the companion plugin installed (hints go nowhere until a URL is set)."""
    from sandbox.kivicare import KiviCareSandbox
    sandbox = KiviCareSandbox(companion=True, companion_secret=SECRET)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def client(plugin) -> CompanionClient:
    return CompanionClient(plugin.base_url, SECRET)
