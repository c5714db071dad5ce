"""The `bcsync` command."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated

import typer

app = typer.Typer(help="bcsync: Business Central ⇄ Dynamics 365 Sales in near real time.", no_args_is_help=True)


@app.command()
def api() -> None:
    """Run the web service (webhooks, health, metrics, admin API) on BCSYNC_HOST:BCSYNC_PORT."""
    from service.runners import run_api

    run_api()


@app.command()
def worker() -> None:
    """Run the consumers of every mapping queue (several may run at once)."""
    from service.runners import run_worker

    run_worker()


@app.command()
def sandbox(
    bc_port: Annotated[int, typer.Option(help="Business Central API port")] = 8081,
    dataverse_port: Annotated[int, typer.Option(help="Dataverse Web API port")] = 8082,
    entra_port: Annotated[int, typer.Option(help="Entra token endpoint port (HTTPS)")] = 8443,
    ca_file: Annotated[str, typer.Option(help="where to write the self-signed CA")] = "sandbox-ca.pem",
) -> None:
    """Run local stand-ins for Business Central, Dataverse and Microsoft Entra."""
    from sandbox.config import SandboxConfig
    from sandbox.main import run

    run(SandboxConfig.from_env(bc_port=bc_port, dataverse_port=dataverse_port, entra_port=entra_port,
                               ca_file=ca_file))


@app.command()
def demo(once: Annotated[bool, typer.Option("--once", help="exit after the summary")] = False) -> None:
    """Sandbox + api + worker on this machine, seeded, with a scripted story and a summary."""
    from service.demo.run import main

    raise typer.Exit(main(once))


@app.command()
def setup() -> None:
    """Assisted setup: check connections, seed mappings, register webhooks (not built yet)."""
    typer.echo("bcsync setup: not built yet (see the operations issue).", err=True)
    raise typer.Exit(2)


@app.command()
def status(
    url: Annotated[str | None, typer.Option(help="api base URL (default BCSYNC_PUBLIC_URL)")] = None,
) -> None:
    """Show per mapping: hold state, queue depth, last success, lag, open errors."""
    from service.settings import load_settings

    settings = load_settings("admin_token")
    assert settings.admin_token is not None
    base = (url or str(settings.public_url)).rstrip("/")
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
    typer.echo(f"{'mapping':<20} {'hold':<5} {'queue':>6} {'errors':>6}  last success")
    for m in body["mappings"]:
        depth = "-" if m["queue_depth"] is None else str(m["queue_depth"])
        typer.echo(f"{m['name']:<20} {'yes' if m['on_hold'] else 'no':<5} {depth:>6} {m['open_errors']:>6}  "
                   f"{m['last_success'] or '-'}")


if __name__ == "__main__":
    app()
