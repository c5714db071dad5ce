"""`/_sandbox/` on the BC port: a human user, seeding, faults, limits, logs, time and state.

No token is needed here and If-Match is never required: this is the BC client's UI, not the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from sandbox.bc import documents
from sandbox.bc.entities import ENTITIES
from sandbox.bc.errors import BCError
from sandbox.bc.guard import Faults
from sandbox.bc.query import parse_filter
from sandbox.bc.runtime import BCSandbox
from sandbox.bc.seed import Seeder
from sandbox.bc.store import Row

Json = dict[str, Any]


def control_router(sb: BCSandbox) -> APIRouter:
    router = APIRouter(prefix="/_sandbox")
    records, hooks = sb.records, sb.webhooks

    def out(name: str, row: Row) -> Json:
        """A row as the API shows it (enum spelling, fields this tenant lacks left out)."""
        return sb.shape.row(name, row)

    def entity(name: str) -> str:
        if name not in ENTITIES:
            raise BCError(404, "BadRequest_NotFound", f"Unknown entity set '{name}'.")
        return name

    # ---- the human user ----------------------------------------------------------------------
    @router.get("/entities/{name}")
    async def list_rows(name: str, filter: str | None = None, top: int = 100) -> Json:
        predicate = parse_filter(sb.shape.view(entity(name)), filter)
        rows = [r for r in sb.store.table(name).rows.values() if predicate is None or predicate(r.data)]
        return {"count": len(rows), "value": [sb.shape.row(name, r) for r in rows[:top]]}

    @router.get("/entities/{name}/{row_id}")
    async def get_row(name: str, row_id: str) -> Json:
        return out(name, records.get(entity(name), row_id))

    @router.post("/entities/{name}", status_code=201)
    async def create_row(name: str, body: Json = Body(...)) -> Json:
        return out(name, records.get(entity(name), records.create(name, body).data["id"]))

    @router.patch("/entities/{name}/{row_id}")
    async def patch_row(name: str, row_id: str, body: Json = Body(...)) -> Json:
        return out(name, records.update(entity(name), row_id, body, None, require_if_match=False))

    @router.delete("/entities/{name}/{row_id}", status_code=204)
    async def delete_row(name: str, row_id: str) -> None:
        records.delete(entity(name), row_id, None, require_if_match=False)

    @router.post("/salesOrders/{row_id}/ship")
    async def ship(row_id: str) -> Json:
        return out("salesOrders", documents.ship(records, row_id))

    @router.post("/salesOrders/{row_id}/post")
    async def post_order(row_id: str) -> Json:
        return out("salesInvoices", documents.ship_and_invoice(records, row_id))

    @router.post("/salesInvoices/{row_id}/post")
    async def post_invoice(row_id: str) -> Json:
        return out("salesInvoices", documents.post_invoice(records, row_id))

    @router.post("/salesInvoices/{row_id}/pay")
    async def pay(row_id: str, body: Json | None = Body(None)) -> Json:
        amount = (body or {}).get("amount")
        return out("salesInvoices", documents.pay(records, row_id, None if amount is None else float(amount)))

    @router.post("/salesInvoices/{row_id}/cancel")
    async def cancel(row_id: str) -> Json:
        return out("salesInvoices", documents.cancel_invoice(records, row_id))

    @router.get("/customers/{row_id}/contacts")
    async def customer_contacts(row_id: str) -> Json:
        company = records.company_contact_of(records.get("customers", row_id).data["id"])
        persons = records.persons_of(company.data["number"]) if company else []
        return {"company": out("contacts", company) if company else None,
                "persons": [out("contacts", p) for p in persons]}

    # ---- data set ----------------------------------------------------------------------------
    @router.post("/seed")
    async def seed(body: Json | None = Body(None)) -> Json:
        spec = body or {}
        return {"created": Seeder(records, int(spec.get("seed", 42)), sb.config.custom_api).run(spec)}

    @router.post("/reset")
    async def reset() -> Json:
        sb.store.reset()
        hooks.subs.clear()
        hooks.deliveries.clear()
        sb.log.entries.clear()
        sb.budget.hits.clear()
        sb.faults = Faults()
        return {"reset": True}

    # ---- faults, limits, logs ----------------------------------------------------------------
    @router.get("/faults")
    async def get_faults() -> Json:
        return {**sb.faults.to_json(), "drop_webhooks": hooks.settings.drop,
                "handshake_delay_ms": int(hooks.settings.handshake_delay * 1000)}

    @router.post("/faults")
    async def set_faults(body: Json = Body(...)) -> Json:
        faults = sb.faults
        if "latency_ms" in body:
            faults.latency_ms = int(body["latency_ms"])
        if "status" in body:
            faults.status = int(body["status"])
            faults.count = int(body.get("count", 1))
            faults.retry_after = None if body.get("retry_after") is None else int(body["retry_after"])
        if "drop_webhooks" in body:
            hooks.settings.drop = bool(body["drop_webhooks"])
        if "handshake_delay_ms" in body:
            hooks.settings.handshake_delay = float(body["handshake_delay_ms"]) / 1000
        return await get_faults()

    @router.delete("/faults")
    async def clear_faults() -> Json:
        sb.faults = Faults()
        hooks.settings.drop, hooks.settings.handshake_delay = False, 0.0
        return await get_faults()

    @router.get("/limits")
    async def get_limits() -> Json:
        return {"limit": sb.budget.limit, "window_seconds": sb.budget.window, "used": sb.budget.used()}

    @router.post("/limits")
    async def set_limits(body: Json = Body(...)) -> Json:
        sb.budget.limit = int(body.get("limit", sb.budget.limit))
        sb.budget.window = float(body.get("window_seconds", sb.budget.window))
        if body.get("reset"):
            sb.budget.hits.clear()
        return await get_limits()

    @router.get("/requests")
    async def requests(limit: int = 1000) -> Json:
        return {"count": len(sb.log.entries), "total": sb.log.total, "value": sb.log.entries[-limit:] if limit else []}

    @router.delete("/requests", status_code=204)
    async def clear_requests() -> None:
        sb.log.entries.clear()

    # ---- webhooks and time -------------------------------------------------------------------
    @router.get("/webhooks")
    async def deliveries(limit: int = 1000) -> Json:
        settings = {k: v for k, v in vars(hooks.settings).items() if k not in ("drop", "handshake_delay")}
        return {"settings": settings, "subscriptions": [s.to_json() for s in hooks.subs.values()],
                "pending": hooks.pending_count(), "deliveries": hooks.deliveries[-limit:]}

    @router.delete("/webhooks", status_code=204)
    async def clear_deliveries() -> None:
        hooks.deliveries.clear()

    @router.post("/webhooks/settings")
    async def webhook_settings(body: Json = Body(...)) -> Json:
        settings = hooks.settings
        for key, value in body.items():
            if key not in vars(settings) or key in ("drop", "handshake_delay"):
                raise BCError(400, "BadRequest", f"Unknown webhook setting '{key}'.")
            setattr(settings, key, tuple(value) if key == "retry_minutes" else type(getattr(settings, key))(value))
        return await deliveries(0)

    @router.post("/webhooks/flush")
    async def flush() -> Json:
        for url in {s.notification_url for s in hooks.subs.values() if s.pending}:
            await hooks.flush(url)
        return {"flushed": True}

    @router.get("/time")
    async def get_time() -> Json:
        return {"now": sb.clock.now().isoformat(), "time_factor": sb.clock.time_factor,
                "offset_seconds": sb.clock.offset.total_seconds()}

    @router.post("/time")
    async def set_time(body: Json = Body(...)) -> Json:
        if "time_factor" in body:
            sb.clock.time_factor = float(body["time_factor"])
        if "advance_seconds" in body:
            sb.clock.advance(float(body["advance_seconds"]))
        return {**await get_time(), "expired": hooks.expire()}

    @router.get("/state")
    async def state() -> Json:
        return {
            "tenantId": sb.config.tenant_id, "environment": sb.config.environment,
            "companyId": sb.company_id, "counts": {n: len(t.rows) for n, t in sb.store.tables.items()},
            "subscriptions": len(hooks.subs), "pendingNotifications": hooks.pending_count(),
            "faults": await get_faults(), "limits": await get_limits(), "time": await get_time(),
            "requests": len(sb.log.entries),
        }

    return router


def install_error_handler(app: Any) -> None:
    """BCError raised in a control endpoint answers in BC's error format."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BCError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(BCError, handler)

