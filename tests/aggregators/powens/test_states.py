"""Every connection state of the reference maps to our code, class and French message."""

from __future__ import annotations

import datetime as dt

import pytest

from releves_mailer.aggregators.powens import KNOWN_STATES, PowensProvider
from releves_mailer.clock import ManualClock
from releves_mailer.collect.errors import ERROR_CODES, UNKNOWN_ERROR, ErrorClass
from releves_mailer.collect.provider import ProviderAccess
from tests.fakes.powens_server import ALL_STATES, FakeConnection, FakePowens

from .conftest import START

ACTION = {
    "wrongpass",
    "SCARequired",
    "webauthRequired",
    "decoupled",
    "passwordExpired",
    "additionalInformationNeeded",
    "actionNeeded",
}
TRANSIENT = {"websiteUnavailable", "bug", "rateLimiting", "validating"}


def test_the_fake_covers_every_known_state() -> None:
    assert set(ALL_STATES) - {"brandNewStateFromTheFuture"} == set(KNOWN_STATES)
    assert set(KNOWN_STATES) == ACTION | TRANSIENT


async def test_synchronised_connection_is_ok(
    provider: PowensProvider, access: ProviderAccess, clock: ManualClock
) -> None:
    status = await provider.connection_status(access)
    assert status.ok and status.state is None and status.error is None
    assert status.checked_at == clock.now()
    assert status.last_sync == START  # naive Paris text read back as UTC
    assert status.raw["id"] == int(access.connection_id)


@pytest.mark.parametrize("state", sorted(KNOWN_STATES))
async def test_each_state_maps_to_its_code(
    state: str,
    fake: FakePowens,
    connection: FakeConnection,
    provider: PowensProvider,
    access: ProviderAccess,
) -> None:
    fake.set_state(connection, state, "Message de la banque")
    status = await provider.connection_status(access)
    assert not status.ok
    assert status.state == state
    error = status.error
    assert error is not None
    assert error.message == ERROR_CODES[state].message
    expected = ErrorClass.ACTION if state in ACTION else ErrorClass.TRANSIENT
    assert error.error_class is expected
    assert status.detail == "Message de la banque"


async def test_unknown_state_is_a_generic_error(
    fake: FakePowens, connection: FakeConnection, provider: PowensProvider, access: ProviderAccess
) -> None:
    fake.set_state(connection, "brandNewStateFromTheFuture")
    status = await provider.connection_status(access)
    assert status.state == "unknown"
    assert status.error is not None
    assert status.error.message == UNKNOWN_ERROR.message
    assert status.error.error_class is ErrorClass.TRANSIENT
    assert "brandNewStateFromTheFuture" in status.detail


async def test_old_spelling_is_normalised(
    fake: FakePowens, connection: FakeConnection, provider: PowensProvider, access: ProviderAccess
) -> None:
    fake.set_state(connection, "wrongPass")
    assert (await provider.connection_status(access)).state == "wrongpass"


async def test_connection_details_and_consent_expiry(
    fake: FakePowens, connection: FakeConnection, provider: PowensProvider, access: ProviderAccess
) -> None:
    expiry = dt.datetime(2026, 8, 29, 12, 30, tzinfo=dt.UTC)
    fake.set_access_expire(connection, expiry)
    assert await provider.consent_expiry(access) == expiry
    listed = await provider.get_connection(access)
    assert listed.id == str(connection.id)
    assert listed.bank_name == "Connecteur de test"
    assert listed.consent_expires_at == expiry
    assert listed.ok


async def test_webauth_detail_is_kept_but_state_is_the_code(
    fake: FakePowens, connection: FakeConnection, provider: PowensProvider, access: ProviderAccess
) -> None:
    fake.set_state(connection, "webauthRequired")
    connection_read = await provider.get_connection(access)
    assert connection_read.state == "webauthRequired"
    assert connection_read.error_message.startswith("Redirecting to https://")
