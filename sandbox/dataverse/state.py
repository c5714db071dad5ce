"""Everything one running Dataverse stand-in holds, shared by the Web API and the control endpoints."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.dataverse.delivery import Dispatcher
from sandbox.dataverse.engine import Organization
from sandbox.dataverse.protection import Budget, Faults
from sandbox.tokens import TokenIssuer

REQUEST_LOG_SIZE = 50_000


@dataclass
class DataverseState:
    config: SandboxConfig
    tokens: TokenIssuer
    org: Organization
    dispatcher: Dispatcher
    budget: Budget = field(default_factory=Budget)
    faults: Faults = field(default_factory=Faults)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    requests_total: int = 0  # requests ever logged (clearing the log or its size drops entries, not this count)

    @property
    def audiences(self) -> list[str]:
        # The service asks for `http://127.0.0.1:<port>/.default`; `localhost` names the same org.
        port = self.config.dataverse_port
        return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
