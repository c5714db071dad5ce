"""The organization's fixed identity: its ids, root business unit, the integration's application user
and the human salesperson the control endpoints act as. Fixed ids keep runs and logs comparable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

ORGANIZATION_ID = "4f1c6a53-2f0e-4d7e-9a61-7c2d35e0b1a9"
ORGANIZATION_NAME = "unq4f1c6a532f0e4d7e9a617c2d35e0"
BUSINESS_UNIT_ID = "a8e2f3c1-6b7d-4e0f-8a9b-0c1d2e3f4a5b"
SALESPERSON_ID = "d1f0c2b4-9e8a-4c6d-b7f1-2a3b4c5d6e7f"
SALESPERSON_AAD_ID = "7c1e2d3f-0a9b-4c8d-8e7f-6a5b4c3d2e1f"
SYSTEM_USER_ID = "5a3c1f2e-8d7b-4e6a-9c0f-1b2d3e4f5a6b"
BASE_CURRENCY_ID = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
DEFAULT_UNIT_GROUP_ID = "3e2d1c0b-a9f8-4e7d-8c6b-5a4f3e2d1c0b"
DEFAULT_UNIT_ID = "4f3e2d1c-0b9a-4f8e-9d7c-6b5a4f3e2d1c"

# accessmode choices of systemuser: 0 Read-Write (interactive), 4 Non-interactive (application users).
ACCESS_READ_WRITE, ACCESS_NON_INTERACTIVE = 0, 4


def app_user_id(client_id: str) -> str:
    """A stable systemuserid for the application user of `client_id` (differs from the client id)."""
    return str(uuid.uuid5(uuid.UUID(ORGANIZATION_ID), f"application-user:{client_id}"))


def app_object_id(client_id: str) -> str:
    """The Entra service principal's object id (also distinct from the application/client id)."""
    return str(uuid.uuid5(uuid.UUID(ORGANIZATION_ID), f"service-principal:{client_id}"))


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the systemuser and its Entra object id, as webhooks report them."""
    user_id: str
    aad_object_id: str
