"""The error list (BC's "Integration Synch. Job Errors"): filter, retry one or all, dismiss, the record's history.

Reads and acts through the admin API's functions (service/api/admin_records.py): the list is `GET /admin/errors`,
the actions are its retry, retry-all and dismiss. Every action answers with a notice and the list again, with the
filters it was sent from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from schemas.mappings import BY_NAME, MAPPINGS
from schemas.vocabulary import Side
from service.api import admin_records
from service.api.admin_records import RowId
from service.api.deps import BrokerDep, DatabaseDep
from service.console.web import Operator, Reader, back, member, notify, render
from service.store.db import Database

router = APIRouter()
PAGE = 100
SCAN_BATCH = 1000  # with a text filter: errors read per admin call
SCAN_LIMIT = 20_000  # … and at most this many per page (then the page says where it stopped)
STATES = (("all", "All (not resolved)"), ("open", "Open"), ("skipped", "Skipped"), ("dismissed", "Dismissed"),
          ("resolved", "Resolved"))


def side_of(source: str) -> str:
    """The error's `source` (`business_central` | `dataverse`) as the history's side name (`bc` | `dataverse`)."""
    return Side.of_source(source).value


def short(record_id: str | None) -> str:
    return f"{record_id[:8]}…" if record_id and len(record_id) > 8 else (record_id or "")


def waiting_link(waiting_for: str | None) -> tuple[str, str, str] | None:
    """`<mapping>:<side>:<id>` of a missing dependency as (mapping, side, id) for its history link, if it is one."""
    parts = (waiting_for or "").split(":", 2)
    if len(parts) == 3 and parts[0] in BY_NAME and parts[1] in ("bc", "dataverse") and parts[2]:
        return parts[0], parts[1], parts[2]
    return None


@dataclass(frozen=True)
class Filters:
    mapping: str | None = None
    state: str = "all"
    q: str = ""
    after: int = 0

    def url(self, after: int | None = None) -> str:
        """The list with these filters (`after`: another page of it)."""
        page = self.after if after is None else after
        params = {k: v for k, v in (("mapping", self.mapping), ("state", "" if self.state == "all" else self.state),
                                    ("q", self.q), ("after", str(page) if page else "")) if v}
        return "/console/errors" + (f"?{urlencode(params)}" if params else "")

    def fields(self) -> dict[str, str]:
        """Hidden fields of an action's form: the filters to come back to."""
        return {"mapping": self.mapping or "", "state": self.state, "q": self.q, "after": str(self.after)}

    @classmethod
    def from_form(cls, form: Any) -> Filters:
        """The filters an action's form carries (whatever does not fit is left out)."""
        mapping = form.get("mapping")
        state = form.get("state")
        q = form.get("q")
        after = form.get("after")
        return cls(mapping=mapping if isinstance(mapping, str) and mapping in BY_NAME else None,
                   state=state if isinstance(state, str) and state in dict(STATES) else "all",
                   q=q[:200] if isinstance(q, str) else "",
                   after=int(after) if isinstance(after, str) and after.isdigit() and len(after) < 11 else 0)


def matches(row: Any, q: str) -> bool:
    needle = q.casefold()
    return any(needle in str(member(row, key) or "").casefold()
               for key in ("message", "source_id", "destination_id", "waiting_for"))


async def page_of(db: Database, filters: Filters) -> tuple[list[Any], int | None, bool]:
    """One page of the list: its rows, the `after` of the next page (None: last page), and whether a text
    filter stopped reading before it filled the page (then the next page goes on from where it stopped)."""
    state = None if filters.state == "all" else filters.state
    if not filters.q:
        rows = await admin_records.errors(db, mapping=filters.mapping, state=state, limit=PAGE + 1,
                                          after=filters.after)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return rows, (member(rows[-1], "id") if more else None), False
    found: list[Any] = []
    cursor, scanned = filters.after, 0
    while scanned < SCAN_LIMIT:
        batch = await admin_records.errors(db, mapping=filters.mapping, state=state, limit=SCAN_BATCH,
                                           after=cursor)
        scanned += len(batch)
        for row in batch:
            if matches(row, filters.q):
                found.append(row)
                if len(found) > PAGE:
                    return found[:PAGE], member(found[PAGE - 1], "id"), False
        if len(batch) < SCAN_BATCH:
            return found, None, False
        cursor = member(batch[-1], "id")
    return found, cursor, True


@router.get("/errors", response_class=HTMLResponse)
async def errors_page(request: Request, user: Reader, db: DatabaseDep,
                      mapping: Annotated[str | None, Query(max_length=64)] = None,
                      state: Annotated[str, Query(pattern=r"^(all|open|skipped|dismissed|resolved)?$")] = "all",
                      q: Annotated[str, Query(max_length=200)] = "",
                      after: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> HTMLResponse:
    filters = Filters(mapping=mapping or None, state=state or "all", q=q.strip(), after=after)
    rows, next_after, partial = await page_of(db, filters)
    views = [{"row": row, "side": side_of(member(row, "source")), "waiting": waiting_link(member(row, "waiting_for"))}
             for row in rows]
    return render(request, "errors.html", active="errors", title="Errors", filters=filters, rows=views,
                  next_url=filters.url(next_after) if next_after is not None else None, partial=partial,
                  first_url=filters.url(0) if filters.after else None, mappings=[m.name for m in MAPPINGS],
                  states=STATES, page_size=PAGE)


def _described(view: Any) -> str:
    return f"{member(view, 'mapping')}, {side_of(member(view, 'source'))} {short(member(view, 'source_id'))}"


@router.post("/errors/retry-all")
async def retry_all(request: Request, user: Operator, db: DatabaseDep, broker: BrokerDep) -> RedirectResponse:
    form = await request.form()
    filters = Filters.from_form(form)
    asked = form.get("mapping")
    if isinstance(asked, str) and asked and filters.mapping is None:  # never "every mapping" by mistake
        notify(request, f"Retry all was not done: no mapping {asked[:64]!r}", "error")
        return back(filters.url())
    try:
        done = await admin_records.retry_all(db, broker, mapping=filters.mapping)
    except HTTPException as exc:
        notify(request, f"Retry all was not done: {exc.detail}", "error")
        return back(filters.url())
    retried = member(done, "retried")
    scope = f" of {filters.mapping}" if filters.mapping else ""
    notify(request, f"Retried {retried} error{'' if retried == 1 else 's'}{scope}: their records are queued "
                    "for synchronization." if retried else f"No error{scope} to retry.")
    return back(filters.url())


@router.post("/errors/{error_id}/retry")
async def retry(request: Request, error_id: RowId, user: Operator, db: DatabaseDep,
                broker: BrokerDep) -> RedirectResponse:
    filters = Filters.from_form(await request.form())
    try:
        view = await admin_records.retry(error_id, db, broker)
    except HTTPException as exc:
        notify(request, f"Error {error_id} was not retried: {exc.detail}", "error")
        return back(filters.url())
    notify(request, f"Retried error {error_id} ({_described(view)}): the record is queued for synchronization.")
    return back(filters.url())


@router.post("/errors/{error_id}/dismiss")
async def dismiss(request: Request, error_id: RowId, user: Operator, db: DatabaseDep) -> RedirectResponse:
    filters = Filters.from_form(await request.form())
    try:
        await admin_records.dismiss(error_id, db)
    except HTTPException as exc:
        notify(request, f"Error {error_id} was not dismissed: {exc.detail}", "error")
        return back(filters.url())
    # The admin function answers nothing (204): the notice names the record from the list.
    found = await admin_records.errors(db, mapping=None, state="dismissed", limit=1, after=error_id - 1)
    what = f" ({_described(found[0])})" if found and member(found[0], "id") == error_id else ""
    notify(request, f"Dismissed error {error_id}{what}: the record is tried again on its next change.")
    return back(filters.url())
