"""Pure parts of the webhook registration (the sandbox tests in tests/integration cover the rest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.registration import _expires_soon, bc_resource, header_auth_value, key_fingerprint, same_resource

C = "c0ffee00-1234-4abc-9def-0123456789ab"


def test_resource_strings_are_written_as_microsoft_documents_them() -> None:
    # "Working with webhooks in Dynamics 365 Business Central": "/api/v2.0/companies(<id>)/customers"
    assert bc_resource(C, "v2.0", "customers") == f"/api/v2.0/companies({C})/customers"
    assert bc_resource(C, "bcsync/integration/v1.0", "resources") == \
        f"/api/bcsync/integration/v1.0/companies({C})/resources"


def test_resources_match_however_bc_spells_them() -> None:
    ours = same_resource(bc_resource(C, "v2.0", "customers"))
    assert ours == f"companies({C})/customers"  # the keys of the keeper's stored states are unchanged
    assert same_resource(f"api/v2.0/companies({C})/customers") == ours
    assert same_resource(f"companies({C.upper()})/customers") == ours
    assert same_resource(f"companies('{C}')/customers") == ours
    assert same_resource(f"https://api.businesscentral.dynamics.com/v2.0/t/production/api/v2.0/companies({C})/customers") \
        == ours
    custom = same_resource(f"/api/bcsync/integration/v1.0/companies({C})/resources")
    assert custom == same_resource(bc_resource(C, "bcsync/integration/v1.0", "resources")) != ours
    assert custom == f"api/bcsync/integration/v1.0/companies({C})/resources"


def test_the_webhook_key_travels_in_a_header_setting_xml_escaped() -> None:
    assert header_auth_value('k"<&>') == \
        '<settings><setting name="x-bcsync-webhook-key" value="k&quot;&lt;&amp;&gt;" /></settings>'


def test_expiry_within_24_hours() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert _expires_soon({"expirationDateTime": "2026-01-01T23:00:00Z"}, now)
    assert not _expires_soon({"expirationDateTime": (now + timedelta(days=2)).isoformat()}, now)
    assert _expires_soon({"expirationDateTime": "garbage"}, now)  # renewing is harmless


def test_key_fingerprint_reveals_nothing_and_tells_keys_apart() -> None:
    one = key_fingerprint("bcsync", "key-1")
    assert one == key_fingerprint("bcsync", "key-1") != key_fingerprint("bcsync", "key-2")
    assert "key-1" not in one and len(one) == 32
