"""Settings of the sandbox, read from the same BCSYNC_* variables as the service.

The sandbox deliberately imports nothing from `service/`, `consumers/` or `schemas/`: a test double that
shares the service's code shares its mistakes. It reads the few variables it needs on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Fixed demo identity, used when the variables are unset (`bcsync demo` uses the same values).
DEMO_TENANT_ID = "0b5c3a1e-2f4d-4e6a-8b7c-9d0e1f2a3b4c"
DEMO_CLIENT_ID = "6f1e2d3c-4b5a-4c6d-8e7f-a0b1c2d3e4f5"
DEMO_CLIENT_SECRET = "bcsync-demo-secret"  # noqa: S105 - a published demo value, not a secret
DEMO_COMPANY_ID = "c0ffee00-1234-4abc-9def-0123456789ab"
DEMO_ENVIRONMENT = "production"

# Readings of facts that Microsoft's documentation and BC's source leave open or that differ between
# versions and tenants. Each is a setting (`BCSYNC_SANDBOX_<NAME>` in the environment, or a field below), so
# the tests can play every reading against the service. Where each fact comes from is said where it is
# modelled (sandbox/bc/*, sandbox/dataverse/*).
ENUM_STYLES = ("encoded", "plain")  # BC option values: "_x0020_", "In_x0020_Review" | " ", "In Review"
NOTIFICATION_RESOURCES = ("as-subscribed", "relative", "absolute")  # the `resource` of a BC notification
NOTIFICATION_TIMES = ("trigger", "modified")  # the `lastModifiedDateTime` of a BC notification (sandbox/bc/store.py)
NAV_STYLES = ("lower", "pascal")  # Dataverse navigation names: defaultuomid | DefaultUoMId (product's)
FULFILL_BINDINGS = ("unbound", "bound")  # POST /FulfillSalesOrder | /salesorders/Microsoft.Dynamics.CRM.…


@dataclass(frozen=True)
class SandboxUser:
    """A user of the sandbox tenant who can sign in through the Entra stand-in's login page (user picker).

    `roles` are the app roles assigned to the user on the app registration: they are the values of the ID
    token's `roles` claim ("Add app roles to your application and receive them in the token").
    """

    upn: str  # the `preferred_username` claim and the picker button's value
    name: str  # the `name` claim
    object_id: str  # the `oid` claim (a stable GUID, as Entra's object ids are immutable)
    roles: tuple[str, ...] = ()


# The fixed users of the sandbox tenant (the operator console's app roles are `Reader` and `Operator`).
SIGNIN_USERS = (
    SandboxUser("reader@contoso.example", "Rita Reader", "5b1d8e2a-3c4f-4a6b-9d7e-1f2a3b4c5d01", ("Reader",)),
    SandboxUser("operator@contoso.example", "Oscar Operator", "5b1d8e2a-3c4f-4a6b-9d7e-1f2a3b4c5d02", ("Operator",)),
    SandboxUser("nobody@contoso.example", "Nora Noroles", "5b1d8e2a-3c4f-4a6b-9d7e-1f2a3b4c5d03", ()),
)


@dataclass(frozen=True)
class SandboxConfig:
    tenant_id: str = DEMO_TENANT_ID
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = DEMO_CLIENT_SECRET
    company_id: str = DEMO_COMPANY_ID
    environment: str = DEMO_ENVIRONMENT
    bc_port: int = 8081
    dataverse_port: int = 8082
    entra_port: int = 8443
    ca_file: str = "sandbox-ca.pem"
    # Seconds of real time per protocol second for BC's webhook delays/retries and subscription expiry.
    # 1.0 is real time; the sandbox default compresses BC's ~30 s notification delay to `bc_notify_delay`.
    time_factor: float = 1.0
    bc_notify_delay: float = 0.2
    # --- Business Central readings -------------------------------------------------------------------------
    custom_api: bool = True  # the bcsync/integration/v1.0 extension (deploy/bc-extension) is installed
    enum_style: str = "encoded"
    notification_resource: str = "as-subscribed"
    # contacts and salespeoplePurchasers take webhooks (BC's source says they can; the documented list of
    # webhook-supported entities does not name them)
    webhook_contacts: bool = False
    missing_fields: tuple[str, ...] = ()  # "<entity set>.<field>" this tenant's API does not have
    # The time a notification carries: "trigger" (BC's source: CurrentDateTime in the database trigger, before the
    # record's SystemModifiedAt) or "modified" (equal to it: both rounded to one SQL datetime tick). sandbox/bc/store.py
    notification_time: str = "trigger"
    # --- Dataverse readings ----------------------------------------------------------------------------------
    nav_style: str = "lower"
    async_primary_name_image: bool = True  # asynchronous steps add the AsynchronousStepPrimaryName image
    zero_operation_id: bool = False  # webhooks carry OperationId 00000000-… (then RequestId identifies them)
    fulfill_binding: str = "unbound"
    # --- Entra sign-in (authorization code flow) -------------------------------------------------------------
    # Registered redirect URIs (reply URLs) of the app registration, `BCSYNC_SANDBOX_REPLY_URLS` comma-separated.
    # Empty: see sandbox/entra_signin.py (any loopback URL whose path ends with /console/auth/callback).
    reply_urls: tuple[str, ...] = ()
    users: tuple[SandboxUser, ...] = SIGNIN_USERS
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in (("enum_style", ENUM_STYLES), ("notification_resource", NOTIFICATION_RESOURCES),
                              ("nav_style", NAV_STYLES), ("fulfill_binding", FULFILL_BINDINGS),
                              ("notification_time", NOTIFICATION_TIMES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"sandbox setting {name} must be one of {', '.join(allowed)}")

    @classmethod
    def from_env(cls, **overrides: object) -> SandboxConfig:
        env = os.environ
        values: dict[str, object] = {
            "tenant_id": env.get("BCSYNC_TENANT_ID") or DEMO_TENANT_ID,
            "client_id": env.get("BCSYNC_CLIENT_ID") or DEMO_CLIENT_ID,
            "client_secret": env.get("BCSYNC_CLIENT_SECRET") or DEMO_CLIENT_SECRET,
            "company_id": env.get("BCSYNC_BC_COMPANY_ID") or DEMO_COMPANY_ID,
            "environment": env.get("BCSYNC_BC_ENVIRONMENT") or DEMO_ENVIRONMENT,
        }
        values.update(readings_from_env(env))
        if env.get("BCSYNC_SANDBOX_REPLY_URLS") is not None:
            values["reply_urls"] = tuple(u.strip() for u in env["BCSYNC_SANDBOX_REPLY_URLS"].split(",") if u.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


READINGS = ("custom_api", "enum_style", "notification_resource", "notification_time", "webhook_contacts",
            "missing_fields", "nav_style",
            "async_primary_name_image", "zero_operation_id", "fulfill_binding")


def readings_from_env(env: os._Environ[str] | dict[str, str]) -> dict[str, object]:
    """`BCSYNC_SANDBOX_<READING>` variables: booleans as 1/0/true/false, missing fields comma-separated."""
    out: dict[str, object] = {}
    for name in READINGS:
        raw = env.get(f"BCSYNC_SANDBOX_{name.upper()}")
        if raw is None:
            continue
        default = getattr(SandboxConfig, name)
        if isinstance(default, bool):
            out[name] = raw.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, tuple):
            out[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
        else:
            out[name] = raw.strip()
    return out
