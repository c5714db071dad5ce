"""The `bcsync` command."""

from __future__ import annotations

import json
import runpy
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from service.settings import Settings

app = typer.Typer(help="bcsync: Business Central ⇄ Dynamics 365 Sales in near real time.", no_args_is_help=True)


@app.command()
def api() -> None:
    """Run the web service (webhooks, health, metrics, admin API) on BCSYNC_HOST:BCSYNC_PORT."""
    from service.runners import run_api

    run_api()


@app.command()
def worker() -> None:
    """Run the consumers of every mapping queue (several may run at once)."""
    # The worker lives in consumers/, which the service's own code never imports: run it as a module.
    runpy.run_module("consumers", run_name="__main__", alter_sys=True)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date and exit (e.g. a Job before a rolling update); the api and the
    worker also do this when they start."""
    from service.logging import configure_logging
    from service.settings import load_settings
    from service.store.migrate import upgrade

    settings = load_settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    typer.echo("database schema up to date")


def _require_sandbox(command: str) -> None:
    """The production image leaves the sandbox (a token issuer for anyone) out: say so instead of a traceback."""
    import importlib.util

    try:
        found = importlib.util.find_spec("sandbox") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        typer.echo(f"bcsync {command}: this installation has no sandbox (the production image leaves it out); "
                   "build the image with `docker build --target demo .`, or install bcsync from its source", err=True)
        raise typer.Exit(2)


@app.command()
def sandbox(
    bc_port: Annotated[int, typer.Option(help="Business Central API port")] = 8081,
    dataverse_port: Annotated[int, typer.Option(help="Dataverse Web API port")] = 8082,
    entra_port: Annotated[int, typer.Option(help="Entra token endpoint port (HTTPS)")] = 8443,
    ca_file: Annotated[str, typer.Option(help="where to write the self-signed CA")] = "sandbox-ca.pem",
    without_extension: Annotated[bool, typer.Option(
        "--without-extension", help="BC without the bcsync extension: its custom API answers 404")] = False,
) -> None:
    """Run local stand-ins for Business Central, Dataverse and Microsoft Entra (readings: BCSYNC_SANDBOX_*)."""
    _require_sandbox("sandbox")
    from sandbox.config import SandboxConfig
    from sandbox.main import run

    run(SandboxConfig.from_env(bc_port=bc_port, dataverse_port=dataverse_port, entra_port=entra_port,
                               ca_file=ca_file, custom_api=False if without_extension else None))


@app.command()
def demo(once: Annotated[bool, typer.Option("--once", help="exit after the summary")] = False) -> None:
    """Sandbox + api + worker on this machine, seeded, with a scripted story and a summary."""
    _require_sandbox("demo")
    from service.demo.run import main

    raise typer.Exit(main(once))


@app.command()
def setup(check: Annotated[bool, typer.Option("--check", help="only report what setup would find; write nothing")]
          = False) -> None:
    """Assisted setup: check both connections and the mappings against both systems' live metadata, seed the
    mappings, register both systems' webhooks; mappings that cannot run there are kept off and named."""
    import asyncio

    from service.connectors.factory import make_clients
    from service.logging import configure_logging
    from service.settings import load_settings
    from service.setup import SetupRefused, run_check, run_setup
    from service.store.db import Database
    from service.store.installation import integration_tag
    from service.store.migrate import upgrade_async
    from service.subscriptions import KeeperBusy

    settings = load_settings("tenant_id", "client_id", "client_secret", "bc_company_id", "dataverse_url",
                             "dataverse_webhook_key", "bc_client_state")
    configure_logging("WARNING")

    async def main() -> dict[str, Any]:
        await upgrade_async(settings.database_url)
        db = Database(settings.database_url)
        bc, dv = make_clients(settings, await integration_tag(settings, db))
        try:
            return await (run_check(bc, dv, db) if check else run_setup(settings, bc, dv, db))
        finally:
            await bc.aclose()
            await dv.aclose()
            await db.close()

    try:
        report = asyncio.run(main())
    except (SetupRefused, KeeperBusy) as exc:
        typer.echo(f"bcsync setup: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(report, indent=2, default=str))
    findings = report.get("check", report)
    for mapping in findings.get("mappings", []):
        if not mapping["available"]:
            typer.echo(f"{mapping['mapping']}: not started: {'; '.join(mapping['problems'])}")
        elif mapping["bc_delivery"] == "poll":
            typer.echo(f"{mapping['mapping']}: Business Central cannot notify it; its BC side is polled")
    for warning in findings.get("warnings", []):
        typer.echo(f"warning: {warning}")
    if check:
        typer.echo("check done: nothing was written to Business Central or Dataverse")
    else:
        typer.echo("setup changed nothing: everything was in place" if not report["changed"] else "setup done")


_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}  # listening everywhere: reach it on loopback


def api_base_url(settings: Settings) -> str:
    """Where the admin commands reach the api: BCSYNC_API_URL, else the local api on BCSYNC_HOST:BCSYNC_PORT
    (a wildcard host on 127.0.0.1). Never BCSYNC_PUBLIC_URL: that is the ingress the two systems call, and the
    admin token has no business travelling through it."""
    if settings.api_url is not None:
        return str(settings.api_url).rstrip("/")
    host = "127.0.0.1" if settings.host in _WILDCARD_HOSTS else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{settings.port}"


class _Missing:
    """A 404 that the caller asked to have back (`_admin(..., missing_ok=True)`) instead of an exit."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _admin(method: str, path: str, url: str | None, body: object = None, *, missing_ok: bool = False) -> Any:
    """Call the admin API of a running `bcsync api` with BCSYNC_ADMIN_TOKEN. With `missing_ok`, a 404 is
    returned as a `_Missing` with the api's detail."""
    from service.settings import load_settings

    settings = load_settings("admin_token")
    assert settings.admin_token is not None
    base = (url or api_base_url(settings)).rstrip("/")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the operator's own api URL
        f"{base}{path}", data=data, method=method,
        headers={"Authorization": f"Bearer {settings.admin_token.get_secret_value()}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        if missing_ok and exc.code == 404:
            try:
                return _Missing(str(json.loads(detail)["detail"]))
            except (ValueError, KeyError, TypeError):
                return _Missing(detail)
        typer.echo(f"bcsync: {method} {path}: {exc.code} {detail}", err=True)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        typer.echo(f"bcsync: cannot reach {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    return json.loads(raw) if raw else None


URL_HELP = ("base URL of the api to call (default: BCSYNC_API_URL, else the local api "
            "http://BCSYNC_HOST:BCSYNC_PORT, 127.0.0.1 for 0.0.0.0 or ::)")
UrlOption = Annotated[str | None, typer.Option(help=URL_HELP)]


@app.command()
def hold(mapping: str, url: UrlOption = None) -> None:
    """Put a mapping (or `all`) on hold: its events wait in its queue."""
    typer.echo(json.dumps(_admin("POST", f"/admin/mappings/{mapping}/hold", url)))


@app.command()
def resume(mapping: str, url: UrlOption = None) -> None:
    """Resume a held mapping (or `all`): its waiting events are applied in order."""
    typer.echo(json.dumps(_admin("POST", f"/admin/mappings/{mapping}/resume", url)))


@app.command()
def mappings(name: Annotated[str | None, typer.Argument()] = None, url: UrlOption = None) -> None:
    """List the mappings, or show one."""
    typer.echo(json.dumps(_admin("GET", f"/admin/mappings/{name}" if name else "/admin/mappings", url), indent=2,
                          default=str))


@app.command()
def errors(mapping: Annotated[str | None, typer.Option()] = None, retry_all: bool = False,
           url: UrlOption = None) -> None:
    """The error list (or `--retry-all`)."""
    if retry_all:
        typer.echo(json.dumps(_admin("POST", "/admin/errors/retry-all", url)))
        return
    query = f"?mapping={mapping}" if mapping else ""
    listed = _admin("GET", f"/admin/errors{query}", url)
    for error in listed if isinstance(listed, list) else []:
        typer.echo(f"{error['id']:>5} {error['mapping']:<20} {error['state']:<8} {error['source']:<17} "
                   f"{error['source_id']} x{error['attempts']}: {error['message'][:120]}")


@app.command()
def couple(mapping: str, bc_id: str, dataverse_id: str,
           sync_from: Annotated[str | None, typer.Option(help="bc or dataverse: synchronize right after")] = None,
           url: UrlOption = None) -> None:
    """Couple two existing records by hand."""
    body = {"mapping": mapping, "bc_id": bc_id, "dataverse_id": dataverse_id, "sync_from": sync_from}
    typer.echo(json.dumps(_admin("POST", "/admin/couplings", url, body), default=str))


def _shown(value: Any) -> str:
    """A field value in a timeline: text in quotes, nothing as "(empty)", anything else as JSON."""
    if value is None or value == "":
        return "(empty)"
    return json.dumps(value, ensure_ascii=False, default=str)


def _when(moment: str | None) -> str:
    """An ISO 8601 time as `YYYY-MM-DD HH:MM:SS` (UTC as the api answers it)."""
    if not moment:
        return "-"
    return moment.replace("T", " ")[:19] + (" UTC" if moment.endswith(("Z", "+00:00")) else "")


def history_lines(page: dict[str, Any]) -> list[str]:
    """A record pair's history (the api's answer) as a readable timeline, oldest first."""
    coupled = "coupled" if page.get("coupled") else "not coupled"
    lines = [f"{page['mapping']}  bc {page.get('bc_id') or '-'}  ⇄  dataverse {page.get('dataverse_id') or '-'}  "
             f"({coupled})"]
    entries = page.get("entries", [])
    titles = [e["label"] for e in entries if e.get("label")]
    if titles:
        lines.append(f"  {titles[-1]}")
    if not entries:
        lines.append("  no history entries kept (coupled, nothing synchronized since)")
    for e in entries:
        origin = "Business Central" if e["side"] == "bc" else "Dynamics 365 Sales"
        lines.append("")
        request = f"  request {e['correlation_id']}" if e.get("correlation_id") else ""
        lines.append(f"{_when(e['at'])}  from {origin}  {e['decision']} ({e['result']}, {e['kind']}, "
                     f"{e['duration_ms']} ms){request}")
        if e.get("reason"):
            lines.append(f"    why: {e['reason']}")
        for c in e.get("changes", []):
            where = "BC" if c["side"] == "bc" else "Sales"
            if c.get("sensitive"):
                lines.append(f"    {where} {c['field']}: changed (sensitive)")
            else:
                lines.append(f"    {where} {c['field']}: {_shown(c.get('old'))} → {_shown(c.get('new'))}")
        for ev in e.get("events", []):
            source = {"business_central": "BC", "dataverse": "Sales"}.get(ev.get("source") or "", ev.get("source"))
            lines.append(f"    event: {ev.get('change_type') or '?'} in {source or '?'}, received "
                         f"{_when(ev.get('received_at'))}, correlation {ev.get('correlation_id') or '-'}")
    if page.get("next_before"):
        lines.append("")
        lines.append(f"(older entries: --before {page['next_before']})")
    return lines


@app.command(name="history")
def history_command(
    mapping: str, record_id: Annotated[str, typer.Argument(metavar="ID", help="either side's id of the record")],
    side: Annotated[str | None, typer.Option(help="bc or dataverse: the side of ID (default: bc, then dataverse)")]
    = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="the newest N entries")] = 100,
    before: Annotated[int | None, typer.Option(help="older entries: the --before an earlier answer named")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the api's answer as JSON")] = False,
    url: UrlOption = None,
) -> None:
    """A record pair's history, oldest first: when, from which side, what was decided and why, every field changed
    (old → new; sensitive fields without values), the events and correlation ids."""
    import urllib.parse

    if side not in (None, "bc", "dataverse"):
        typer.echo("bcsync history: --side is bc or dataverse", err=True)
        raise typer.Exit(2)
    query = f"?limit={limit}" + (f"&before={before}" if before else "")
    page: Any = None
    for each in [side] if side else ["bc", "dataverse"]:
        path = (f"/admin/records/{urllib.parse.quote(mapping, safe='')}/{each}/"
                f"{urllib.parse.quote(record_id, safe='')}/history{query}")
        page = _admin("GET", path, url, missing_ok=True)
        if not isinstance(page, _Missing):
            break
    if isinstance(page, _Missing):
        typer.echo(f"bcsync history: {page.detail}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(page, indent=2, ensure_ascii=False) if as_json else "\n".join(history_lines(page)))


@app.command()
def search(q: str, limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
           as_json: Annotated[bool, typer.Option("--json", help="the api's answer as JSON")] = False,
           url: UrlOption = None) -> None:
    """Find record pairs across mappings by name, number, e-mail or id (then: bcsync history MAPPING ID)."""
    import urllib.parse

    found = _admin("GET", f"/admin/records/search?{urllib.parse.urlencode({'q': q, 'limit': limit})}", url)
    if as_json:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False))
        return
    hits = found.get("hits", [])
    if not hits:
        typer.echo(f"nothing found for {q!r}")
        return
    typer.echo(f"{'mapping':<20} {'bc id':<36} {'dataverse id':<36} {'last':<23} {'decision':<13} label")
    for h in hits:
        typer.echo(f"{h['mapping']:<20} {h.get('bc_id') or '-':<36} {h.get('dataverse_id') or '-':<36} "
                   f"{_when(h.get('last_at')):<23} {h.get('last_decision') or '-':<13} {h.get('label') or ''}"
                   + ("" if h.get("coupled") else "  (not coupled)"))


@app.command()
def status(
    url: UrlOption = None,
) -> None:
    """Show per mapping: hold state, BC push or poll, queue depth, last success, open errors; why one does
    not run."""
    from service.settings import load_settings

    settings = load_settings("admin_token")
    assert settings.admin_token is not None
    base = (url or api_base_url(settings)).rstrip("/")
    request = urllib.request.Request(  # noqa: S310 - the operator's own api URL
        f"{base}/admin/status", headers={"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - operator-given URL
            body = json.load(response)
    except (urllib.error.URLError, OSError) as exc:
        typer.echo(f"bcsync status: cannot reach {base}/admin/status: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"broker connected: {body['broker_connected']}   outbox pending: {body['outbox_pending']}")
    typer.echo(f"{'mapping':<20} {'hold':<5} {'BC':<5} {'queue':>6} {'errors':>6}  last success")
    for m in body["mappings"]:
        depth = "-" if m["queue_depth"] is None else str(m["queue_depth"])
        typer.echo(f"{m['name']:<20} {'yes' if m['on_hold'] else 'no':<5} {m.get('bc_delivery') or '-':<5} "
                   f"{depth:>6} {m['open_errors']:>6}  {m['last_success'] or '-'}")
        if not m.get("available", True):
            typer.echo(f"{'':<20} not running: {m.get('unavailable_reason')}")


if __name__ == "__main__":
    app()
