"""The sandbox's clock: wall time plus an offset that `/_sandbox/time` can advance.

`time_factor` is real seconds per protocol second (config.time_factor): 0.001 turns BC's 3-day
subscription life into ~4 minutes and its 1-minute retry delay into 60 ms.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, time_factor: float = 1.0) -> None:
        self.time_factor = time_factor
        self.offset = timedelta()
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def stamp(self) -> datetime:
        """`now()` to the millisecond and never going back; two writes may share a time, as in BC."""
        now = self.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if now < self._last:
            now = self._last
        self._last = now
        return now

    def after(self, moment: datetime) -> datetime:
        """`stamp()`, but at least a millisecond after `moment` (a record's SystemModifiedAt, set after the
        trigger time its notification carries)."""
        now = max(self.stamp(), moment + timedelta(milliseconds=1))
        self._last = now
        return now

    def scaled(self, protocol_seconds: float) -> float:
        """Real seconds to wait for a protocol delay of `protocol_seconds`."""
        return protocol_seconds * self.time_factor

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def iso(dt: datetime) -> str:
    """BC's format: UTC, `Z`, fractional seconds with trailing zeros dropped (…T21:49:12.57Z)."""
    text = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].rstrip("0").rstrip(".")
    return text + "Z"


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
