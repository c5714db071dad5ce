"""Settings of the background jobs (environment variables, `BCSYNC_` prefix; additions to the contract)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BCSYNC_", env_file=".env", extra="ignore")

    jobs_poll_seconds: float = Field(default=5.0, gt=0)  # how often a worker looks at the store for work
    keeper_minutes: float = Field(default=5.0, ge=0)  # subscription keeper interval; 0 = off
    bc_poll_seconds: float = Field(default=60.0, ge=0)  # reads of BC sides that BC cannot notify; 0 = off
    bc_poll_full_every: int = Field(default=10, ge=0)  # every Nth poll also lists the ids (deletes); 0 = never
    catch_up_overlap_seconds: float = Field(default=120.0, ge=0)  # read back this much before the watermark
    full_reconcile_every: int = Field(default=12, ge=0)  # every Nth catch-up also reconciles everything; 0 = never
    full_sync_batch: int = Field(default=100, ge=1, le=5000)  # records applied between progress updates
    full_sync_concurrency: int = Field(default=8, ge=1, le=64)  # records of one line applied at once
    full_sync_lines: int = Field(default=2, ge=1, le=16)  # lines one worker runs at once
    line_lease_seconds: float = Field(default=120.0, gt=0)  # renewed every batch (and reconciliation jobs')
    reconcile_jobs: int = Field(default=2, ge=1, le=16)  # reconciliations one worker runs at once
