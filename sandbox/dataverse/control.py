"""`/_sandbox/*` on the Dataverse port: act as a human user, seed, inject faults, set the request budget,
read the request log and the webhook delivery log. JSON in and out; no token needed (local only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.dataverse import errors, identity, seed
from sandbox.dataverse.state import DataverseState
from sandbox.dataverse.webapi import API_ROOT, execute

USER_HEADER = "x-sandbox-user"


def router(state: DataverseState) -> APIRouter:
    api = APIRouter(prefix="/_sandbox")

    def human(request: Request) -> identity.Caller:
        return state.org.caller_for(request.headers.get(USER_HEADER) or identity.SALESPERSON_ID)

    @api.get("")
    @api.get("/")
    @api.get("/state")
    async def overview() -> dict[str, Any]:
        return {"dataverse": "ok", "organization_id": identity.ORGANIZATION_ID,
                "business_unit_id": identity.BUSINESS_UNIT_ID,
                "application_user_id": state.org.app_user.user_id, "salesperson_id": identity.SALESPERSON_ID,
                "base_currency_id": identity.BASE_CURRENCY_ID,
                "rows": {k: len(v) for k, v in state.org.store.rows.items()}}

    @api.api_route("/user" + API_ROOT + "/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"])
    async def as_user(path: str, request: Request) -> Response:
        """The Web API as a human user (the seeded salesperson, or `x-sandbox-user: <systemuserid>`)."""
        try:
            return await execute(state, request, path, human(request))
        except errors.DataverseError as exc:
            return exc.response()

    @api.post("/salesorders/{order_id}/submit")
    async def submit(order_id: str, request: Request) -> Response:
        try:
            state.org.update("salesorder", order_id, {"statecode": 1, "statuscode": 3}, human(request))
        except errors.DataverseError as exc:
            return exc.response()
        return Response(status_code=204)

    @api.post("/seed")
    async def seed_data(request: Request) -> dict[str, Any]:
        spec = await request.json()
        made = seed.seed(state.org, spec if isinstance(spec, dict) else {})
        return {"created": made}

    @api.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return state.faults.describe()

    @api.post("/faults")
    async def add_faults(request: Request) -> dict[str, Any]:
        state.faults.apply(await request.json())
        return state.faults.describe()

    @api.delete("/faults")
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @api.get("/limits")
    async def get_limits() -> dict[str, Any]:
        return {"requests": state.budget.requests, "window_seconds": state.budget.window}

    @api.post("/limits")
    async def set_limits(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.budget.configure(int(body.get("requests", state.budget.requests)),
                               float(body.get("window_seconds", state.budget.window)))
        return {"requests": state.budget.requests, "window_seconds": state.budget.window}

    @api.get("/requests")
    async def requests_log(path_contains: str | None = None, limit: int | None = None) -> dict[str, Any]:
        rows = [r for r in state.requests if path_contains is None or path_contains in r["path"]]
        if limit is not None:  # the last `limit` rows
            rows = rows[len(rows) - limit:] if 0 < limit < len(rows) else rows if limit > 0 else []
        return {"total": state.requests_total, "value": rows}

    @api.delete("/requests")
    async def clear_requests() -> Response:
        state.requests.clear()
        return Response(status_code=204)

    @api.get("/webhooks")
    async def webhooks(body: bool = False) -> dict[str, Any]:
        return {"value": [d.describe(body) for d in state.dispatcher.deliveries]}

    @api.delete("/webhooks")
    async def clear_webhooks() -> Response:
        state.dispatcher.deliveries.clear()
        return Response(status_code=204)

    @api.post("/webhooks/drain")
    async def drain(seconds: float = 10.0) -> JSONResponse:
        done = await state.dispatcher.drain(seconds)
        return JSONResponse({"idle": done}, status_code=200 if done else 504)

    return api
