"""The overview: per mapping, how it is delivered, hold state, queue depth, the last hour, last success, errors."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.api import admin
from service.api.deps import BrokerDep, DatabaseDep
from service.console import activity
from service.console.web import Reader, render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, user: Reader, db: DatabaseDep, broker: BrokerDep) -> HTMLResponse:
    status = await admin.status(db, broker)
    cache = getattr(request.app.state, "console_last_hour", None)
    if cache is None:
        cache = request.app.state.console_last_hour = activity.LastHourCache(db)
    hour = await cache.get()
    charts = {name: activity.sparkline(each) for name, each in hour.by_mapping.items()}
    return render(request, "overview.html", active="overview", title="Overview", status=status, hour=hour,
                  charts=charts, empty=activity.MappingActivity())
