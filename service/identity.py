"""Who the integration is in Dataverse, so that its own writes can be told apart from users' writes.

Learned once from `WhoAmI` (or given by BCSYNC_INTEGRATION_USER_ID) and cached for the process's life.
Until it is known, echoes are still recognised by the integration's `tag` in SharedVariables, and the
sync engine's hash comparison catches the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from service.logging import get_logger

log = get_logger(__name__)


class IntegrationIdentity:
    def __init__(self, user_id: str | None = None, tag: str | None = None) -> None:
        self.user_id = user_id.lower() if user_id else None
        self.tag = tag  # the installation's integration tag (service/store/installation.py)

    async def learn(self, who_am_i: Callable[[], Awaitable[str]], *, max_delay: float = 60.0) -> None:
        """Ask WhoAmI until it answers (Dataverse or Entra may be unreachable at start)."""
        delay = 1.0
        while self.user_id is None:
            try:
                self.user_id = (await who_am_i()).lower()
                log.info("integration user learned from WhoAmI", user_id=self.user_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("WhoAmI failed; retrying", error=str(exc)[:300], retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
