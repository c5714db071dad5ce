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
    extra: dict[str, str] = field(default_factory=dict)

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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
