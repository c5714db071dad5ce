"""Everything one BC stand-in holds: settings, clock, data, webhooks, faults and logs."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.bc.clock import Clock
from sandbox.bc.guard import Budget, Faults, RequestLog
from sandbox.bc.records import Records
from sandbox.bc.shape import Shape
from sandbox.bc.store import Store
from sandbox.bc.webhooks import Webhooks, WebhookSettings
from sandbox.config import SandboxConfig
from sandbox.tokens import TokenIssuer

BC_AUDIENCE = "https://api.businesscentral.dynamics.com"


@dataclass
class BCSandbox:
    config: SandboxConfig
    tokens: TokenIssuer
    clock: Clock = field(init=False)
    shape: Shape = field(init=False)
    store: Store = field(init=False)
    records: Records = field(init=False)
    webhooks: Webhooks = field(init=False)
    faults: Faults = field(default_factory=Faults)
    budget: Budget = field(default_factory=Budget)
    log: RequestLog = field(default_factory=RequestLog)

    def __post_init__(self) -> None:
        self.clock = Clock(self.config.time_factor)
        self.shape = Shape(self.config)
        self.store = Store(self.clock, self.config.notification_time)
        self.records = Records(self.store, self.shape)
        settings = WebhookSettings(notify_delay=self.config.bc_notify_delay)
        self.webhooks = Webhooks(self.clock, self.config, settings)
        self.store.on_change = self.webhooks.on_change

    @property
    def company_id(self) -> str:
        return self.config.company_id.lower()
