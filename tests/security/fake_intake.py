"""A stand-in for the Business Central door's store (service/api/bc_intake.py) in the in-process app, whose
store and broker are absent: events go to the app's FakeWriter, catch-up requests are remembered."""

from __future__ import annotations

from fastapi import FastAPI

from schemas.events import ChangeEvent
from service.api.bc_intake import bc_intake
from tests.security.inprocess import FakeWriter


class FakeIntake:
    def __init__(self, writer: FakeWriter) -> None:
        self.writer = writer
        self.catch_ups: list[list[str]] = []

    async def store(self, events: list[ChangeEvent], catch_up: list[str]) -> int:
        if catch_up:
            self.catch_ups.append(catch_up)
        return await self.writer.store(events)


def fake_intake(app: FastAPI) -> FakeIntake:
    """Install a FakeIntake in `app` (in-process, see tests/security/inprocess.py) and return it."""
    intake = FakeIntake(app.state.writer)
    app.dependency_overrides[bc_intake] = lambda: intake
    return intake
