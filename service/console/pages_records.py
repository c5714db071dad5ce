"""Records: search a record pair across mappings, see its coupling and its history, couple and decouple."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from schemas.mappings import MAPPINGS
from schemas.vocabulary import Side
from service.api import admin_history, admin_records
from service.api.admin_mappings import known
from service.api.deps import BrokerDep, DatabaseDep
from service.console.web import Operator, Reader, back, notify, render
from service.store import couplings

router = APIRouter()
PAGE = 50
RecordId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/records", response_class=HTMLResponse)
async def search(request: Request, user: Reader, db: DatabaseDep,
                 q: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    result = await admin_history.search_records(db, q=q, limit=100) if q.strip() else None
    return render(request, "records.html", active="records", title="Records", q=q, result=result,
                  mappings=[m.name for m in MAPPINGS])


@router.get("/records/{mapping}/{side}/{record_id}", response_class=HTMLResponse)
async def record(request: Request, user: Reader, db: DatabaseDep, mapping: str, side: Side, record_id: RecordId,
                 before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HTMLResponse:
    known(mapping)
    try:
        page = await admin_history.record_history(mapping, side, record_id, db, limit=PAGE, before=before)
    except HTTPException as exc:
        if exc.status_code != 404:
            raise
        page = None
    async with db.session() as session:
        coupling = await couplings.find(session, mapping, side.value, record_id.strip())
    return render(request, "record.html", active="records", title=f"{mapping} {record_id}", mapping=mapping,
                  side=side.value, record_id=record_id.strip().lower(), page=page, coupling=coupling,
                  entries=list(reversed(page.entries)) if page else [])


@router.post("/records/couple", response_class=RedirectResponse)
async def couple(request: Request, user: Operator, db: DatabaseDep, broker: BrokerDep,
                 mapping: Annotated[str, Form(max_length=64)], bc_id: Annotated[str, Form(max_length=64)],
                 dataverse_id: Annotated[str, Form(max_length=64)],
                 sync_from: Annotated[str, Form(max_length=16)] = "") -> RedirectResponse:
    try:
        body = admin_records.NewCoupling(mapping=mapping, bc_id=bc_id.strip(), dataverse_id=dataverse_id.strip(),
                                         sync_from=sync_from or None)
        await admin_records.couple(body, request, db, broker)
    except ValidationError as exc:
        notify(request, "Not coupled: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                                    for e in exc.errors()), "error")
        return back("/console/records")
    except HTTPException as exc:
        notify(request, f"Not coupled: {exc.detail}", "error")
        return back("/console/records")
    notify(request, f"Coupled {mapping}: Business Central {body.bc_id} with Sales {body.dataverse_id}"
                    + (f"; synchronizing from {sync_from}" if sync_from else ""))
    return back(f"/console/records/{mapping}/bc/{body.bc_id}")


@router.post("/records/couplings/{coupling_id}/decouple", response_class=RedirectResponse)
async def decouple(request: Request, user: Operator, db: DatabaseDep,
                   coupling_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> RedirectResponse:
    async with db.session() as session:
        row = await couplings.find_by_id(session, coupling_id)
    if row is None:
        notify(request, f"No coupling {coupling_id}: it was removed already", "error")
        return back("/console/records")
    await admin_records.decouple(coupling_id, db)
    notify(request, f"Decoupled {row.mapping}: Business Central {row.bc_id} and Sales {row.dataverse_id} stay as "
                    "they are and are no longer kept equal")
    return back(f"/console/records/{row.mapping}/bc/{row.bc_id}")
