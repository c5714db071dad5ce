"""TokenProvider keeps a scope's token on the event loop until halfway to its expiry (service/connectors/auth.py)."""

from __future__ import annotations

import pytest

from service.connectors import auth
from service.connectors.auth import TokenProvider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> tuple[TokenProvider, list[tuple[str, bool]], Clock]:
    tokens = TokenProvider("https://login.example", "tenant", "client", "secret")
    asked: list[tuple[str, bool]] = []

    def acquire(scope: str, force_refresh: bool) -> tuple[str, float]:
        asked.append((scope, force_refresh))
        return f"{scope}-token-{len(asked)}", 3600.0

    clock = Clock()
    monkeypatch.setattr(tokens, "_acquire", acquire)
    monkeypatch.setattr(auth.time, "monotonic", clock)
    return tokens, asked, clock


async def test_a_held_token_is_answered_without_asking_msal(provider: tuple[TokenProvider, list, Clock]) -> None:
    tokens, asked, clock = provider
    assert await tokens.token("bc") == "bc-token-1"
    clock.now += 1799
    assert await tokens.token("bc") == "bc-token-1"
    assert await tokens.token("dv") == "dv-token-2"  # each scope its own
    assert asked == [("bc", False), ("dv", False)]


async def test_msal_is_asked_again_halfway_to_expiry_and_on_a_forced_refresh(
        provider: tuple[TokenProvider, list, Clock]) -> None:
    tokens, asked, clock = provider
    await tokens.token("bc")
    clock.now += 1801
    assert await tokens.token("bc") == "bc-token-2"
    assert await tokens.token("bc", force_refresh=True) == "bc-token-3"  # a 401: never the refused token again
    assert await tokens.token("bc") == "bc-token-3"
    assert asked == [("bc", False), ("bc", False), ("bc", True)]


async def test_a_refused_token_is_not_sent_again_when_the_forced_refresh_fails(
        provider: tuple[TokenProvider, list, Clock], monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, _, _ = provider
    assert await tokens.token("bc") == "bc-token-1"

    def entra_down(scope: str, force_refresh: bool) -> tuple[str, float]:
        raise auth.TokenError("authority unavailable")

    monkeypatch.setattr(tokens, "_acquire", entra_down)
    with pytest.raises(auth.TokenError):
        await tokens.token("bc", force_refresh=True)
    with pytest.raises(auth.TokenError):  # asks Entra again instead of answering with the refused token
        await tokens.token("bc")
