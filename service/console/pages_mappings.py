"""Table mappings (BC's "Integration Table Mappings"): the list with hold and resume, one mapping with its fields,
filters, settings, version history and a diff per version, and its change form (only while on hold).

Reads and acts through the admin API's functions (service/api/admin_mappings.py, and `status` for whether setup
keeps a mapping off). A change the API refuses is shown on the same page: each of its problems next to the input
it concerns, the values as they were entered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from schemas.mapping_config import MappingChanges
from schemas.mappings import MAPPINGS, ConflictPolicy, DeletePolicy, Direction
from service.api import admin, admin_mappings
from service.api.admin_mappings import MappingName
from service.api.deps import BrokerDep, DatabaseDep
from service.broker import Broker
from service.console.web import Operator, Reader, back, local_path, member, notify, render
from service.store.db import Database

router = APIRouter()
TOP = ""  # the key of problems that concern no one input
SIMPLE = ("direction", "conflict_policy", "delete_policy", "bc_filter", "dataverse_filter", "reconcile_minutes")
TEMPLATES = ("bc_template", "dataverse_template")
INPUTS = (*SIMPLE, "only_coupled", "depends_on", *TEMPLATES)


def as_config(config: Any) -> dict[str, Any]:
    """A stored version's config: JSON text in the store (a dict, should the admin API parse it)."""
    if isinstance(config, str):
        parsed = json.loads(config) if config else {}
        return parsed if isinstance(parsed, dict) else {}
    return dict(config or {})


# --- the diff of two versions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiffLine:
    key: str  # e.g. `bc_filter`, `bc_template.blocked`, `fields[email ⇄ emailaddress1].enabled`
    change: str  # added | removed | changed
    old: str | None  # JSON text of the value before (None: added)
    new: str | None  # … and after (None: removed)


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One entry per setting: objects by their keys, field changes by their field pair."""
    out: dict[str, Any] = {}
    for key, item in config.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out.update(_flat(item, f"{name}."))
        elif (isinstance(item, list) and item
              and all(isinstance(f, dict) and "bc" in f and "dataverse" in f for f in item)):
            for f in item:
                out.update(_flat({k: v for k, v in f.items() if k not in ("bc", "dataverse")},
                                 f"{name}[{f['bc']} ⇄ {f['dataverse']}]."))
        else:
            out[name] = item
    return out


def _text(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False, sort_keys=True)


def config_diff(before: dict[str, Any], after: dict[str, Any]) -> list[DiffLine]:
    """What changed from one stored config to the next, per key, in key order."""
    old, new = _flat(before), _flat(after)
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            lines.append(DiffLine(key, "added", None, _text(new[key])))
        elif key not in new:
            lines.append(DiffLine(key, "removed", _text(old[key]), None))
        elif old[key] != new[key]:
            lines.append(DiffLine(key, "changed", _text(old[key]), _text(new[key])))
    return lines


# --- the change form -----------------------------------------------------------------------------------------

def form_values(shown: Any) -> dict[str, Any]:
    """The change form filled in with a mapping's current settings (strings and booleans, as a form has them)."""
    return {
        **{key: "" if member(shown, key) is None else str(member(shown, key)) for key in SIMPLE},
        "only_coupled": bool(member(shown, "only_coupled")),
        "depends_on": list(member(shown, "depends_on") or []),
        **{key: _text(member(shown, key) or {}) for key in TEMPLATES},
        "fields": [{"enabled": bool(member(f, "enabled")), "direction": str(member(f, "direction")),
                    "sensitive": bool(member(f, "sensitive"))} for f in member(shown, "fields") or []],
    }


def entered_values(form: Any, field_count: int) -> dict[str, Any]:
    """What the user sent, in the same shape as `form_values`."""
    def text(key: str) -> str:
        item = form.get(key)
        return item.strip() if isinstance(item, str) else ""

    return {
        **{key: text(key) for key in SIMPLE},
        "only_coupled": form.get("only_coupled") == "on",
        "depends_on": [d for d in form.getlist("depends_on") if isinstance(d, str)],
        **{key: text(key) for key in TEMPLATES},
        "fields": [{"enabled": form.get(f"field-{i}-enabled") == "on", "direction": text(f"field-{i}-direction"),
                    "sensitive": form.get(f"field-{i}-sensitive") == "on"} for i in range(field_count)],
    }


def changes_from(current: dict[str, Any], entered: dict[str, Any],
                 pairs: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The body of a PATCH: only what differs from the current settings; and the problems found on the way."""
    changes: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for key in SIMPLE:
        if entered[key] == current[key]:
            continue
        if key == "reconcile_minutes" and entered[key] == "":
            problems.setdefault(key, []).append("the interval cannot be emptied here; enter a number of minutes "
                                                "(0: no scheduled reconciliation)")
            continue
        changes[key] = entered[key]
    if entered["only_coupled"] != current["only_coupled"]:
        changes["only_coupled"] = entered["only_coupled"]
    if sorted(entered["depends_on"]) != sorted(current["depends_on"]):
        changes["depends_on"] = entered["depends_on"]
    for key in TEMPLATES:
        try:
            parsed = json.loads(entered[key] or "{}")
        except json.JSONDecodeError as exc:
            problems.setdefault(key, []).append(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
            continue
        if parsed != json.loads(current[key] or "{}"):
            changes[key] = parsed
    fields = []
    for (bc, dataverse), now, then in zip(pairs, entered["fields"], current["fields"], strict=True):
        change = {k: now[k] for k in ("enabled", "direction", "sensitive") if now[k] != then[k]}
        if change:
            fields.append({"bc": bc, "dataverse": dataverse, **change})
    if fields:
        changes["fields"] = fields
    return changes, problems


_NO_PAIR = re.compile(r"has no field pair (?P<bc>.+) / (?P<dataverse>.+)$")
# Where one of the admin API's problems begins in its 400's `detail` (they are joined with "; "; a problem can hold
# "; " itself: "CUSTOMER cannot synchronize to_crm; it supports: …", or a filter quoted in its message).
_PROBLEM_START = re.compile("; (?=(?:" + "|".join(
    [*(re.escape(m.name) + " " for m in MAPPINGS), *(re.escape(k) + ":" for k in INPUTS),
     "unknown or self dependencies", "dependency cycle"]) + "))")


def split_problems(detail: str) -> list[str]:
    """The admin API's problems, one by one, from its 400's `detail`."""
    return [part for part in _PROBLEM_START.split(detail) if part]


def place_problems(messages: list[str], pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The admin API's problems (its 400's `detail`, split at "; ") by the input they concern: a setting's
    name, `field-<i>` for a field pair, or TOP."""
    placed: dict[str, list[str]] = {}
    for message in messages:
        key = TOP
        named = message.split(":", 1)[0].strip()
        if named in INPUTS:
            key = named
        elif " cannot synchronize " in message:
            key = "direction"
        elif message.startswith(("unknown or self dependencies", "dependency cycle")):
            key = "depends_on"
        elif (found := _NO_PAIR.search(message)) and (found["bc"], found["dataverse"]) in pairs:
            key = f"field-{pairs.index((found['bc'], found['dataverse']))}"
        placed.setdefault(key, []).append(message)
    return placed


def place_validation(exc: ValidationError, changes: dict[str, Any],
                     pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """A MappingChanges the form could not make (a number out of range, an unknown value) by input."""
    placed: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = error["loc"]
        key = str(loc[0]) if loc else TOP
        if key == "fields" and len(loc) > 1 and isinstance(loc[1], int):
            change = changes["fields"][loc[1]]
            key = f"field-{pairs.index((change['bc'], change['dataverse']))}"
            text = f"{'.'.join(str(p) for p in loc[2:])}: {error['msg']}" if len(loc) > 2 else error["msg"]
        else:
            text = error["msg"]
        placed.setdefault(key if key in INPUTS or key.startswith("field-") else TOP, []).append(text)
    return placed


# --- pages ---------------------------------------------------------------------------------------------------

async def _statuses(db: Database, broker: Broker) -> dict[str, Any]:
    return {member(m, "name"): m for m in member(await admin.status(db, broker), "mappings") or []}


@router.get("/mappings", response_class=HTMLResponse)
async def mappings_page(request: Request, user: Reader, db: DatabaseDep, broker: BrokerDep) -> HTMLResponse:
    rows = await admin_mappings.list_mappings(db)
    return render(request, "mappings.html", active="mappings", title="Mappings", rows=rows,
                  statuses=await _statuses(db, broker))


def _pairs(shown: Any) -> list[tuple[str, str]]:
    return [(member(f, "bc"), member(f, "dataverse")) for f in member(shown, "fields") or []]


async def _mapping_page(request: Request, db: Database, broker: Broker, name: str, *, shown: Any | None = None,
                        values: dict[str, Any] | None = None, problems: dict[str, list[str]] | None = None,
                        status_code: int = 200, diff: int | None = None) -> HTMLResponse:
    shown = shown if shown is not None else await admin_mappings.show_mapping(name, db)
    history = list(member(shown, "history") or [])
    configs = {member(v, "version"): as_config(member(v, "config")) for v in history}
    diff_lines = before_version = None
    if diff is not None and diff in configs:
        before_version = max((v for v in configs if v < diff), default=1)
        diff_lines = config_diff(configs.get(before_version, {}), configs[diff])
    version = member(shown, "version")
    return render(
        request, "mapping.html", status_code, active="mappings", title=f"Mapping {name}", m=shown,
        status=(await _statuses(db, broker)).get(name), history=list(reversed(history)),
        stored=json.dumps(configs.get(version, {}), ensure_ascii=False, indent=2, sort_keys=True),
        diff=diff, diff_lines=diff_lines, before_version=before_version,
        values=values or form_values(shown), problems=problems or {}, editing=values is not None,
        directions=[d.value for d in Direction], conflict_policies=[p.value for p in ConflictPolicy],
        delete_policies=[p.value for p in DeletePolicy], others=[m.name for m in MAPPINGS if m.name != name])


@router.get("/mappings/{name}", response_class=HTMLResponse)
async def mapping_page(request: Request, name: MappingName, user: Reader, db: DatabaseDep, broker: BrokerDep,
                       diff: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> HTMLResponse:
    return await _mapping_page(request, db, broker, name, diff=diff)


@router.post("/mappings/{name}", response_model=None)
async def change(request: Request, name: MappingName, user: Operator, db: DatabaseDep,
                 broker: BrokerDep) -> HTMLResponse | RedirectResponse:
    shown = await admin_mappings.show_mapping(name, db)  # 404: the console's page for it
    form = await request.form()
    pairs = _pairs(shown)
    entered = entered_values(form, len(pairs))

    def again(status_code: int, problems: dict[str, list[str]]) -> Any:
        return _mapping_page(request, db, broker, name, shown=shown, values=entered, problems=problems,
                             status_code=status_code)

    body, found = changes_from(form_values(shown), entered, pairs)
    if found:
        return await again(400, found)
    sent_version = form.get("version")
    if sent_version != str(member(shown, "version")):
        return await again(409, {TOP: [f"{name} was changed meanwhile (now version {member(shown, 'version')}): "
                                       "review what it is now below, and send your change again."]})
    if not body:
        notify(request, f"Nothing to change: {name} is as the form was.")
        return back(f"/console/mappings/{name}")
    try:
        changes = MappingChanges.model_validate(body)
    except ValidationError as exc:
        return await again(400, place_validation(exc, body, pairs))
    try:
        done = await admin_mappings.change_mapping(name, changes, db)
    except HTTPException as exc:
        if exc.status_code == 400:
            return await again(400, place_problems(split_problems(str(exc.detail)), pairs))
        return await again(exc.status_code, {TOP: [str(exc.detail)]})
    version = member(done, "version")
    notify(request, f"{name} changed ({', '.join(sorted(body))}): now version {version}. Resume it to apply "
                    "its waiting events with the change.")
    return back(f"/console/mappings/{name}?diff={version}#versions")


async def _hold(request: Request, name: str, db: Database, on_hold: bool) -> RedirectResponse:
    form = await request.form()
    target = form.get("next")
    to = local_path(target if isinstance(target, str) else None)
    try:
        done = await (admin_mappings.hold if on_hold else admin_mappings.resume)(name, db)
    except HTTPException as exc:
        notify(request, f"{name} was not {'put on hold' if on_hold else 'resumed'}: {exc.detail}", "error")
        return back(to)
    names = member(done, "mappings") or []
    what = f"All {len(names)} mappings" if name == "all" else name
    if on_hold:
        text = f"{what} {'are' if name == 'all' else 'is'} on hold: events wait in the queue until resumed."
        running = member(done, "runs_in_flight") or 0
        if running:
            notify(request, f"{text} {running} run{'s' if running != 1 else ''} were still finishing after "
                            f"{admin_mappings.HOLD_WAIT_SECONDS:.0f} s (a stopped worker's lease runs out by "
                            "itself).", "error")
            return back(to)
    else:
        text = f"{what} resumed: waiting events are applied in order."
    notify(request, text)
    return back(to)


@router.post("/mappings/{name}/hold")
async def hold(request: Request, name: MappingName, user: Operator, db: DatabaseDep) -> RedirectResponse:
    return await _hold(request, name, db, True)


@router.post("/mappings/{name}/resume")
async def resume(request: Request, name: MappingName, user: Operator, db: DatabaseDep) -> RedirectResponse:
    return await _hold(request, name, db, False)
