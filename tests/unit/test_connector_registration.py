"""Pure parts of the webhook registration (the sandbox tests in tests/integration cover the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.registration import _expires_soon, _same_resource, bc_resource, key_fingerprint

C = "c0ffee00-1234-4abc-9def-0123456789ab"


def test_resource_strings() -> None:
    assert bc_resource(C, "v2.0", "customers") == f"companies({C})/customers"
    assert bc_resource(C, "bcsync/integration/v1.0", "resources") == \
        f"api/bcsync/integration/v1.0/companies({C})/resources"


def test_resources_match_however_bc_spells_them() -> None:
    ours = _same_resource(bc_resource(C, "v2.0", "customers"))
    assert _same_resource(f"/api/v2.0/companies({C})/customers") == ours
    assert _same_resource(f"companies({C.upper()})/customers") == ours
    custom = _same_resource(f"/api/bcsync/integration/v1.0/companies({C})/resources")
    assert custom == _same_resource(bc_resource(C, "bcsync/integration/v1.0", "resources")) != ours


def test_expiry_within_24_hours() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert _expires_soon({"expirationDateTime": "2026-01-01T23:00:00Z"}, now)
    assert not _expires_soon({"expirationDateTime": (now + timedelta(days=2)).isoformat()}, now)
    assert _expires_soon({"expirationDateTime": "garbage"}, now)  # renewing is harmless


def test_key_fingerprint_reveals_nothing_and_tells_keys_apart() -> None:
    one = key_fingerprint("bcsync", "key-1")
    assert one == key_fingerprint("bcsync", "key-1") != key_fingerprint("bcsync", "key-2")
    assert "key-1" not in one and len(one) == 32
