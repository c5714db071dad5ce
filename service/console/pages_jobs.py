"""The jobs pages: full synchronization (review, start, live progress, restart a line), the webhook
subscriptions (state, refresh now) and the setup check (the mappings against both systems' live schema).

Every page reads what the admin API's functions answer (service/api/admin_jobs.py, admin.py), so the console
shows what `GET /admin/...` shows. The review counts read one page per side and mapping from BC and Dataverse
(slow); the live progress (`?fragment=lines`, fetched by console.js every 2 s while a run goes on) skips them and
reads the store only. Its progress bars use the record counts the last review in this process saw.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from service.api import admin, admin_jobs
from service.api.deps import BrokerDep, DatabaseDep, SettingsDep
from service.api.models_jobs import FullSyncRequest
from service.connectors.auth import TokenError
from service.connectors.http import ApiError
from service.console.web import TEMPLATES, Operator, Reader, back, member, notify, remember, remembered, render
from service.logging import get_logger, redact_text

log = get_logger(__name__)
router = APIRouter()

FULL_SYNC, SUBSCRIPTIONS, SETUP_CHECK = "/console/full-sync", "/console/subscriptions", "/console/setup-check"
LINES_FRAGMENT = f"{FULL_SYNC}?fragment=lines"
RUN_LABELS = {"in_progress": "In progress", "finished": "Finished", "error": "Stopped on an error"}
EXPIRY_WARNING = timedelta(days=1)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Response):
        return dict(json.loads(bytes(value.body)))
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return dict(value)


def _problem(exc: HTTPException) -> str:
    return str(exc.detail)


# ---- full synchronization ---------------------------------------------------------------------------------------


def _expected(line: Any) -> int | None:
    """Records a full synchronization of this review line reads: BC's (to_crm), Sales' (from_crm) or both."""
    bc, dataverse = member(line, "bc_records"), member(line, "dataverse_records")
    sides = {"to_crm": [bc], "from_crm": [dataverse]}.get(str(member(line, "direction")), [bc, dataverse])
    if any(count is None for count in sides):
        return None
    return sum(sides)


def _expected_records(request: Request) -> dict[str, int]:
    """Records a line reads (its source sides) as the last review in this process counted them: the live
    fragment has no counts of its own. A process that has not reviewed yet shows the counters without a bar."""
    state = request.app.state  # the api's state, shared with the console
    found: dict[str, int] | None = getattr(state, "console_expected_records", None)
    if found is None:
        found = state.console_expected_records = {}
    return found


def _remember(request: Request, review: Any) -> None:
    expected_records = _expected_records(request)
    for line in review or []:
        expected = _expected(line)
        if expected is None:
            expected_records.pop(str(member(line, "mapping")), None)
        else:
            expected_records[str(member(line, "mapping"))] = expected


def _progress_rows(request: Request, run: Any) -> list[dict[str, Any]]:
    """Per line of the run: the line, records done so far, and the expected total where one is known."""
    rows = []
    expected_records = _expected_records(request)
    for line in member(run, "lines", []) if run is not None else []:
        counts = member(line, "counts") or {}
        done = sum(int(n) for n in (counts.values() if isinstance(counts, dict) else _as_dict(counts).values()))
        expected = expected_records.get(str(member(line, "mapping")))
        rows.append({"line": line, "counts": counts if isinstance(counts, dict) else _as_dict(counts),
                     "done": done, "total": max(expected, done) if expected is not None else None})
    return rows


def _lines_context(request: Request, status: Any) -> dict[str, Any]:
    run = member(status, "run")
    live = run is not None and member(run, "status") == "in_progress"
    return {"run": run, "rows": _progress_rows(request, run), "live": live, "run_labels": RUN_LABELS,
            "refresh_url": LINES_FRAGMENT}


@router.get("/full-sync", response_class=HTMLResponse)
async def full_sync(request: Request, user: Reader, db: DatabaseDep,
                    fragment: Literal["lines"] | None = None, recount: bool = False) -> HTMLResponse:
    if fragment == "lines":  # the live refresh: the store only, no counts from BC or Dataverse
        status = await admin_jobs.full_sync_status(request, db, review_lines=False)
        # Not `render`: it would take the notices meant for the next page.
        return TEMPLATES.TemplateResponse(request, "jobs_lines.html", {
            "user": user, "csrf": request.session.get("csrf", ""), **_lines_context(request, status)})
    # Counts are reused for a minute, but never across a change of the last run (a start, a line done, the end).
    progress = await admin_jobs.full_sync_status(request, db, review_lines=False)
    run_now = progress.model_dump_json(include={"run"})
    counted = None if recount else remembered(request, "full-sync-review")
    if counted and counted[0][0] != run_now:
        counted = None
    status = progress if counted else await admin_jobs.full_sync_status(request, db, review_lines=True)
    review = counted[0][1] if counted else (member(status, "review") or [])
    if counted is None:
        remember(request, "full-sync-review", (run_now, review))
    _remember(request, review)
    return render(request, "full_sync.html", active="full-sync", title="Full synchronization", review=review,
                  counted_ago=round(counted[1]) if counted else 0,
                  unavailable=member(status, "unavailable") or {}, recommended=admin_jobs.FULL,
                  couple=admin_jobs.COUPLE, **_lines_context(request, status))


@router.post("/full-sync", response_class=RedirectResponse)
async def start_full_sync(request: Request, user: Operator, db: DatabaseDep, broker: BrokerDep,
                          mappings: Annotated[list[str] | None, Form()] = None) -> RedirectResponse:
    chosen = [name for name in dict.fromkeys(mappings or []) if name]
    if not chosen:
        notify(request, "Not started: choose at least one mapping.", "error")
        return back(FULL_SYNC)
    try:
        started = await admin_jobs.full_sync_start(FullSyncRequest(mappings=chosen), request, db, broker)
    except HTTPException as exc:
        notify(request, f"Not started: {_problem(exc)}", "error")
        return back(FULL_SYNC)
    _remember(request, member(started, "review"))
    run = member(started, "run")
    names = [str(member(line, "mapping")) for line in member(run, "lines", [])]
    log.info("console: full synchronization started", user=user.username, run=member(run, "id"), mappings=names)
    notify(request, f"Full synchronization {member(run, 'id')} started: {', '.join(names)}. The workers run the lines "
                    "in dependency order; this page shows their progress.")
    return back(FULL_SYNC)


@router.post("/full-sync/lines/{name}/restart", response_class=RedirectResponse)
async def restart_line(request: Request, user: Operator, db: DatabaseDep, broker: BrokerDep,
                       name: Annotated[str, Path(max_length=64)]) -> RedirectResponse:
    try:
        await admin_jobs.full_sync_restart(name, db, broker)
    except HTTPException as exc:
        notify(request, f"Not restarted: {_problem(exc)}", "error")
        return back(FULL_SYNC)
    log.info("console: full synchronization line restarted", user=user.username, mapping=name)
    notify(request, f"Line {name} restarted: it is Ready again with zero counts and runs as soon as its "
                    "dependencies have finished.")
    return back(FULL_SYNC)


# ---- subscriptions ----------------------------------------------------------------------------------------------


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry(value: Any, now: datetime | None = None) -> str | None:
    """"expired", "soon" (within a day) or None (later, or no expiry known)."""
    moment = _moment(value)
    if moment is None:
        return None
    now = now or datetime.now(UTC)
    return "expired" if moment <= now else "soon" if moment - now <= EXPIRY_WARNING else None


def _rows(subscriptions: Any) -> list[dict[str, Any]]:
    return [{"sub": s, "expiry": expiry(member(s, "expires_at"))} for s in subscriptions or []]


@router.get("/subscriptions", response_class=HTMLResponse)
async def subscriptions(request: Request, user: Reader, db: DatabaseDep) -> HTMLResponse:
    states = await admin_jobs.subscriptions(db)
    bc, dataverse = _rows(member(states, "bc")), _rows(member(states, "dataverse"))
    return render(request, "subscriptions.html", active="subscriptions", title="Subscriptions", bc=bc,
                  dataverse=dataverse, attention=sum(1 for row in bc + dataverse if row["expiry"]))


def _summary(report: dict[str, Any]) -> str:
    parts = []
    for system, label in (("bc", "Business Central"), ("dataverse", "Dataverse")):
        lists = report.get(system) or {}
        said = [f"{len(v)} {k}" for k, v in lists.items() if v and k != "failed"]
        parts.append(f"{label}: {', '.join(said) or 'nothing to do'}")
    if report.get("recreated"):
        parts.append(f"re-created: {', '.join(report['recreated'])}")
    if report.get("caught_up"):
        parts.append(f"catch-up requested for {', '.join(report['caught_up'])}")
    return "; ".join(parts)


@router.post("/subscriptions/refresh", response_class=RedirectResponse)
async def refresh_subscriptions(request: Request, user: Operator, db: DatabaseDep, broker: BrokerDep,
                                settings: SettingsDep) -> RedirectResponse:
    try:
        answer = await admin_jobs.subscriptions_refresh(request, db, broker, settings)
    except HTTPException as exc:
        notify(request, f"Not refreshed: {_problem(exc)}", "error")
        return back(SUBSCRIPTIONS)
    report = _as_dict(answer).get("report") or {}
    failed = [*report.get("errors", []), *((report.get("bc") or {}).get("failed") or []),
              *((report.get("dataverse") or {}).get("failed") or [])]
    log.info("console: subscriptions refreshed", user=user.username, errors=len(failed))
    if failed or (isinstance(answer, Response) and answer.status_code >= 400):
        notify(request, "Refreshed with problems: " + "; ".join(str(f) for f in failed), "error")
    else:
        notify(request, f"Refreshed: {_summary(report)}.")
    return back(SUBSCRIPTIONS)


# ---- setup check ------------------------------------------------------------------------------------------------


@router.get("/setup-check", response_class=HTMLResponse)
async def setup_check(request: Request, user: Reader, db: DatabaseDep, recheck: bool = False) -> HTMLResponse:
    checked = None if recheck else remembered(request, "setup-check")
    try:
        report = checked[0] if checked else await admin.setup_check(request, db)
    except HTTPException as exc:  # 400: a connection check failed (says what to fix); 503: not configured
        return render(request, "setup_check.html", exc.status_code, active="setup", title="Setup check",
                      failure=_problem(exc), report=None)
    except (ApiError, TokenError) as exc:  # a system did not answer, or answered what the check cannot use
        detail = redact_text(str(exc))[:1000]
        log.warning("console: setup check could not reach a system", detail=detail)
        return render(request, "setup_check.html", 502, active="setup", title="Setup check", failure=detail,
                      report=None)
    if checked is None:
        remember(request, "setup-check", report)
    mappings = member(report, "mappings") or []
    return render(request, "setup_check.html", active="setup", title="Setup check", failure=None, report=report,
                  checked_ago=round(checked[1]) if checked else 0,
                  mappings=mappings, bc_routes=member(report, "bc_routes") or {},
                  unavailable=member(report, "unavailable") or {}, warnings=member(report, "warnings") or [],
                  all_good=bool(member(report, "ok")) and not member(report, "warnings")
                  and not any(member(m, "warnings") for m in mappings))
