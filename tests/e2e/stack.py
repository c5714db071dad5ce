"""End-to-end harness: the real `bcsync sandbox`, `bcsync api` and `bcsync worker` processes over HTTP.

    async with Stack(tmp_path, workers=1) as stack:        # or the `stack` / `make_stack` fixtures
        await stack.register_webhooks()
        account = await stack.dv.create("accounts", {"name": "Fabrikam"})      # a human in Dataverse
        customer = await stack.bc.create("customers", {"displayName": "Contoso"})  # a human in BC
        await stack.wait_until(lambda: stack.change_events("CUSTOMER", account))

Each process logs to `<dir>/<name>.log` (JSON lines). `stop()` SIGTERMs every process (SIGKILL after 10 s)
and deletes the namespace's RabbitMQ queues and exchanges.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandbox.config import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_COMPANY_ID, DEMO_TENANT_ID
from tests.conftest import BROKER_URL, delete_namespace
from tests.harness import ADMIN_TOKEN, CLIENT_STATE, WEBHOOK_KEY, free_port

Json = dict[str, Any]

BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
DV_TABLES = ("account", "contact", "systemuser", "product", "uomschedule", "transactioncurrency", "pricelevel",
             "productpricelevel", "salesorder", "salesorderdetail", "invoice", "invoicedetail")
DV_API = "api/data/v9.2"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Writes that register webhooks rather than change data; not counted as "writes by the integration".
REGISTRATION_PATHS = ("/subscriptions", "/serviceendpoints", "/sdkmessage")


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise AssertionError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                             f"{response.text[:2000]}")
    return response


def entity_id(response: httpx.Response) -> str:
    """The id of a row created by a Dataverse POST (204 + OData-EntityId)."""
    return _check(response).headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def read_json_lines(path: Path) -> list[Json]:
    events = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1,
                     message: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s")
        await asyncio.sleep(interval)


class Process:
    """One `python -m service.cli <args>` child process; stdout and stderr go to `log`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen([sys.executable, "-m", "service.cli", *self.args], env=self.env,
                                          stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.log.parent)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def events(self) -> list[Json]:
        return [{**e, "process": self.name} for e in read_json_lines(self.log)]

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def wait_for_log(self, event: str, timeout: float = 30.0) -> Json:
        """The first JSON log line whose `event` is `event`; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.events():
                if line.get("event") == event:
                    return line
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.returncode}) before {event!r}:\n{self.tail()}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{event!r} not logged by {self.name} within {timeout} s:\n{self.tail()}")

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; the exit status."""
        if not self.alive:
            return self.returncode
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.alive:
            self.popen.kill()
        return await asyncio.to_thread(self.popen.wait)

    async def kill(self) -> int | None:
        """SIGKILL (a crash)."""
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            return await asyncio.to_thread(self.popen.wait)
        return self.returncode


class BcUser:
    """A human user of Business Central through the sandbox's control endpoints (`/_sandbox/...`)."""

    def __init__(self, http: httpx.AsyncClient, port: int) -> None:
        self.http, self.base = http, f"http://127.0.0.1:{port}/_sandbox"

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        response = _check(await self.http.request(method, f"{self.base}/{path}", json=json,
                                                  params={k: v for k, v in params.items() if v is not None}))
        return response.json() if response.content else None

    # entities (set names as in the API: customers, contacts, items, salesOrders, salesOrderLines, ...)
    async def create(self, entity_set: str, body: Json) -> Json:
        return await self.call("POST", f"entities/{entity_set}", body)

    async def patch(self, entity_set: str, row_id: str, body: Json) -> Json:
        return await self.call("PATCH", f"entities/{entity_set}/{row_id}", body)

    async def delete(self, entity_set: str, row_id: str) -> None:
        await self.call("DELETE", f"entities/{entity_set}/{row_id}")

    async def get(self, entity_set: str, row_id: str) -> Json:
        return await self.call("GET", f"entities/{entity_set}/{row_id}")

    async def query(self, entity_set: str, filter: str | None = None, top: int = 100) -> list[Json]:
        body = await self.call("GET", f"entities/{entity_set}", filter=filter, top=top)
        return body["value"] if isinstance(body, dict) else body

    async def customer_contacts(self, customer_id: str) -> Any:
        return await self.call("GET", f"customers/{customer_id}/contacts")

    # documents
    async def ship(self, order_id: str) -> Json:
        return await self.call("POST", f"salesOrders/{order_id}/ship")

    async def post_order(self, order_id: str) -> Json:
        """Ship and invoice: the order goes, a posted invoice comes."""
        return await self.call("POST", f"salesOrders/{order_id}/post")

    async def post_invoice(self, invoice_id: str) -> Json:
        return await self.call("POST", f"salesInvoices/{invoice_id}/post")

    async def cancel_invoice(self, invoice_id: str) -> Json:
        return await self.call("POST", f"salesInvoices/{invoice_id}/cancel")

    async def pay(self, invoice_id: str, amount: float | None = None) -> Json:
        body = None if amount is None else {"amount": amount}
        return await self.call("POST", f"salesInvoices/{invoice_id}/pay", body)

    # sandbox control
    async def seed(self, **spec: Any) -> Json:
        return await self.call("POST", "seed", spec)

    async def reset(self) -> Json:
        return await self.call("POST", "reset")

    async def state(self) -> Json:
        return await self.call("GET", "state")

    async def faults(self, **spec: Any) -> Json:
        """E.g. `faults(status=429, count=3, retry_after=1)`, `faults(drop_webhooks=True)`."""
        return await self.call("POST", "faults", spec)

    async def clear_faults(self) -> None:
        await self.call("DELETE", "faults")

    async def limits(self, **spec: Any) -> Json:
        return await self.call("POST" if spec else "GET", "limits", spec or None)

    async def requests(self) -> list[Json]:
        """The API request log (the integration's calls; control calls are not logged)."""
        return (await self.call("GET", "requests", limit=10**6))["value"]

    async def clear_requests(self) -> None:
        await self.call("DELETE", "requests")

    async def webhooks(self) -> Json:
        """Subscriptions, settings, pending count and every handshake/notification attempt."""
        return await self.call("GET", "webhooks", limit=10**6)

    async def webhook_settings(self, **settings: Any) -> Json:
        return await self.call("POST", "webhooks/settings", settings)

    async def flush(self) -> None:
        """Send every pending notification now."""
        await self.call("POST", "webhooks/flush")

    async def time(self, **spec: Any) -> Json:
        """`time(advance_seconds=...)`, `time(time_factor=...)`."""
        return await self.call("POST" if spec else "GET", "time", spec or None)


class DvUser:
    """A human user of Dataverse (the salesperson, or `user=<systemuserid>`) and the Dataverse controls."""

    def __init__(self, http: httpx.AsyncClient, port: int) -> None:
        self.http, self.base = http, f"http://127.0.0.1:{port}/_sandbox"

    async def web_api(self, method: str, path: str, *, user: str | None = None, **kwargs: Any) -> httpx.Response:
        """A raw Web API call as the human (`path` relative to /api/data/v9.2/); not checked."""
        headers = {**kwargs.pop("headers", {}), **({"x-sandbox-user": user} if user else {})}
        return await self.http.request(method, f"{self.base}/user/{DV_API}/{path}", headers=headers, **kwargs)

    async def create(self, entity_set: str, body: Json, *, user: str | None = None) -> str:
        """Create a row; its id. Lookups as `"<nav>@odata.bind": "/set(<id>)"`."""
        return entity_id(await self.web_api("POST", entity_set, user=user, json=body))

    async def update(self, entity_set: str, row_id: str, body: Json, *, user: str | None = None) -> None:
        _check(await self.web_api("PATCH", f"{entity_set}({row_id})", user=user, json=body,
                                  headers={"If-Match": "*"}))

    async def delete(self, entity_set: str, row_id: str, *, user: str | None = None) -> None:
        _check(await self.web_api("DELETE", f"{entity_set}({row_id})", user=user))

    async def get(self, entity_set: str, row_id: str, select: str | None = None) -> Json:
        params = {"$select": select} if select else None
        return _check(await self.web_api("GET", f"{entity_set}({row_id})", params=params)).json()

    async def query(self, entity_set: str, filter: str | None = None, select: str | None = None,
                    top: int | None = None) -> list[Json]:
        params = {k: v for k, v in {"$filter": filter, "$select": select, "$top": top}.items() if v is not None}
        return _check(await self.web_api("GET", entity_set, params=params)).json()["value"]

    async def bind(self, table: str, column: str, entity_set: str, row_id: str) -> Json:
        """`{"<navigation>@odata.bind": "/<set>(<id>)"}` with the navigation name this org gives `table.column`
        toward that set's table (read from its metadata, as the service does: the sandbox can spell them
        in another case)."""
        target = entity_set.removesuffix("s") if not entity_set.endswith("ies") else entity_set[:-3] + "y"
        relationships = _check(await self.web_api(
            "GET", f"EntityDefinitions(LogicalName='{table}')/ManyToOneRelationships",
            params={"$filter": f"ReferencingAttribute eq '{column}'"})).json()["value"]
        names = [r["ReferencingEntityNavigationPropertyName"] for r in relationships
                 if r["ReferencedEntity"] in (target, "owner") or len(relationships) == 1]
        assert len(names) == 1, f"{table}.{column} → {entity_set}: {relationships}"
        return {f"{names[0]}@odata.bind": f"/{entity_set}({row_id})"}

    async def submit_order(self, order_id: str, *, user: str | None = None) -> None:
        headers = {"x-sandbox-user": user} if user else {}
        _check(await self.http.post(f"{self.base}/salesorders/{order_id}/submit", headers=headers))

    async def call(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        response = _check(await self.http.request(method, f"{self.base}/{path}", json=json,
                                                  params={k: v for k, v in params.items() if v is not None}))
        return response.json() if response.content else None

    async def state(self) -> Json:
        """Organization, application user, salesperson and base currency ids; row counts."""
        return await self.call("GET", "state")

    async def seed(self, **spec: Any) -> Json:
        return await self.call("POST", "seed", spec)

    async def faults(self, **spec: Any) -> Json:
        """E.g. `faults(status=429, count=2, retry_after=1, path_contains="accounts")`, `faults(drop_webhooks=1)`."""
        return await self.call("POST", "faults", spec)

    async def clear_faults(self) -> None:
        await self.call("DELETE", "faults")

    async def limits(self, **spec: Any) -> Json:
        return await self.call("POST" if spec else "GET", "limits", spec or None)

    async def requests(self, path_contains: str | None = None) -> list[Json]:
        """The Web API request log (token callers only: the integration; the human's calls are not in it)."""
        return (await self.call("GET", "requests", path_contains=path_contains))["value"]

    async def clear_requests(self) -> None:
        await self.call("DELETE", "requests")

    async def webhooks(self, body: bool = False) -> list[Json]:
        """The webhook delivery log (step, url, message, entity, user, outcome, attempts; `body` adds the context)."""
        return (await self.call("GET", "webhooks", body=str(body).lower()))["value"]

    async def clear_webhooks(self) -> None:
        await self.call("DELETE", "webhooks")

    async def drain(self, seconds: float = 10.0) -> None:
        """Wait until every webhook delivery has finished."""
        await self.call("POST", "webhooks/drain", seconds=seconds)


@dataclass(frozen=True)
class WriteMark:
    """Positions in the sandboxes' request logs (see `Stack.mark_writes`)."""
    bc: int
    dataverse: int


class Stack:
    """The sandbox, the api and `workers` workers as real processes, wired to each other over HTTP."""

    def __init__(self, directory: Path, *, workers: int = 1, database_url: str | None = None,
                 namespace: str | None = None, env: dict[str, str] | None = None, notify_delay: float = 0.2,
                 api_env: dict[str, str] | None = None) -> None:
        self.dir = directory
        # Settings of the api process only (on top of `env`), e.g. its own broker URL through a TcpProxy; kept
        # for restarts after `kill_api`.
        self.api_env = api_env or {}
        self.dir.mkdir(parents=True, exist_ok=True)
        self.initial_workers, self.notify_delay = workers, notify_delay
        self.namespace = namespace or f"e2e-{uuid.uuid4().hex[:10]}"
        self.tenant_id, self.company_id = DEMO_TENANT_ID, DEMO_COMPANY_ID
        self.client_id, self.client_secret = DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        self.bc_port, self.dv_port, self.entra_port, self.api_port = sorted(ports)
        self.ca_file = self.dir / "sandbox-ca.pem"
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.bc_root = f"http://127.0.0.1:{self.bc_port}/v2.0/{self.tenant_id}/production"
        self.dv_url = f"http://127.0.0.1:{self.dv_port}"
        self.authority = f"https://127.0.0.1:{self.entra_port}"
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.dir}/bcsync.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BCSYNC_")} | {
            "BCSYNC_NAMESPACE": self.namespace, "BCSYNC_DATABASE_URL": self.database_url,
            "BCSYNC_BROKER_URL": BROKER_URL, "BCSYNC_HOST": "127.0.0.1", "BCSYNC_PORT": str(self.api_port),
            "BCSYNC_TENANT_ID": self.tenant_id, "BCSYNC_CLIENT_ID": self.client_id,
            "BCSYNC_CLIENT_SECRET": self.client_secret, "BCSYNC_AUTHORITY_HOST": self.authority,
            "BCSYNC_BC_URL": f"http://127.0.0.1:{self.bc_port}/v2.0/{{tenant}}/production",
            "BCSYNC_BC_ENVIRONMENT": "production", "BCSYNC_BC_COMPANY_ID": self.company_id,
            "BCSYNC_DATAVERSE_URL": self.dv_url, "BCSYNC_DATAVERSE_WEBHOOK_KEY": WEBHOOK_KEY,
            "BCSYNC_BC_CLIENT_STATE": CLIENT_STATE, "BCSYNC_PUBLIC_URL": self.api_url,
            "BCSYNC_ADMIN_TOKEN": ADMIN_TOKEN, "REQUESTS_CA_BUNDLE": str(self.ca_file),
            "SSL_CERT_FILE": str(self.ca_file), "BCSYNC_WORKER_METRICS_PORT": "0", "BCSYNC_RECONCILE_MINUTES": "0",
            # BC sides that BC cannot notify (contacts, by default in the sandbox) are polled: every second here.
            "BCSYNC_BC_POLL_SECONDS": "1", "BCSYNC_JOBS_POLL_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        } | (env or {})
        self.http = httpx.AsyncClient(timeout=30.0)
        self.bc, self.dv = BcUser(self.http, self.bc_port), DvUser(self.http, self.dv_port)
        self.sandbox: Process | None = None
        self.api: Process | None = None
        self.workers: list[Process] = []  # every worker ever started, dead ones too (their logs count)
        self.exit_codes: dict[str, int | None] = {}
        self._tokens: dict[str, str] = {}
        self._counter: dict[str, int] = {}
        self._stopped = False

    # ---- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _process(self, role: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        self._counter[role] = n = self._counter.get(role, 0) + 1
        return Process(f"{role}-{n}", args, self.env | (env or {}), self.dir / f"{role}-{n}.log")

    async def start(self) -> None:
        try:
            await self.start_sandbox()
            await self.start_api()
            await asyncio.gather(*(self.start_worker() for _ in range(self.initial_workers)))
        except BaseException:
            await self.stop()
            raise

    async def start_sandbox(self) -> Process:
        self.sandbox = self._process("sandbox", [
            "sandbox", "--bc-port", str(self.bc_port), "--dataverse-port", str(self.dv_port),
            "--entra-port", str(self.entra_port), "--ca-file", str(self.ca_file)]).start()
        ports = (self.entra_port, self.bc_port, self.dv_port)
        await wait_until(lambda: all(map(self._listening, ports)) or self._died(self.sandbox), timeout=30,
                         message="sandbox ports")
        assert self.ca_file.exists()
        await self.bc.webhook_settings(notify_delay=self.notify_delay)
        return self.sandbox

    async def start_api(self, env: dict[str, str] | None = None) -> Process:
        """Start (or restart, same port) the api; returns once /readyz answers 200."""
        assert self.api is None or not self.api.alive, "the api is running"
        self.api = api = self._process("api", ["api"], self.api_env | (env or {})).start()

        async def ready() -> bool:
            self._died(api)
            try:
                return (await self.http.get(f"{self.api_url}/readyz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=30, message="api /readyz")
        return api

    async def stop_api(self) -> int | None:
        assert self.api is not None
        return await self.api.stop()

    async def kill_api(self) -> int | None:
        assert self.api is not None
        return await self.api.kill()

    async def start_worker(self, env: dict[str, str] | None = None) -> Process:
        """Start one more worker; returns once it logged "worker consuming"."""
        worker = self._process("worker", ["worker"], env).start()
        self.workers.append(worker)
        await worker.wait_for_log("worker consuming")
        return worker

    def _worker(self, worker: Process | None) -> Process:
        running = [w for w in self.workers if w.alive]
        assert worker or running, "no worker is running"
        return worker or running[0]

    async def stop_worker(self, worker: Process | None = None) -> int | None:
        """SIGTERM one worker (the oldest running one by default); its exit status."""
        return await self._worker(worker).stop()

    async def kill_worker(self, worker: Process | None = None) -> int | None:
        """SIGKILL one worker (the oldest running one by default)."""
        return await self._worker(worker).kill()

    @property
    def running_workers(self) -> list[Process]:
        return [w for w in self.workers if w.alive]

    async def stop(self) -> dict[str, int | None]:
        """Stop everything (services first, then the sandbox); clean the broker namespace. Exit codes by name."""
        if self._stopped:
            return self.exit_codes
        self._stopped = True
        await self.http.aclose()
        services = [p for p in (*self.workers, self.api) if p is not None]
        codes = await asyncio.gather(*(p.stop() for p in services))
        self.exit_codes.update({p.name: c for p, c in zip(services, codes, strict=True)})
        if self.sandbox is not None:
            self.exit_codes[self.sandbox.name] = await self.sandbox.stop()
        delays = self.env.get("BCSYNC_RETRY_DELAYS", "1,5,30,120,600").split(",")
        await delete_namespace(self.namespace, [int(d) for d in delays if d.strip().isdigit()])
        return self.exit_codes

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    @staticmethod
    def _died(process: Process | None) -> bool:
        if process is not None and process.popen is not None and not process.alive:
            raise AssertionError(f"{process.name} exited ({process.returncode}):\n{process.tail()}")
        return False

    # ---- the integration's identity and raw calls -------------------------------------------
    async def token(self, scope: str) -> str:
        """A client-credentials token from the sandbox's Entra over HTTPS (as the service gets it)."""
        if scope not in self._tokens:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
            async with httpx.AsyncClient(verify=verify, timeout=10) as tls:
                response = _check(await tls.post(f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token", data={
                    "grant_type": "client_credentials", "client_id": self.client_id,
                    "client_secret": self.client_secret, "scope": scope}))
            self._tokens[scope] = response.json()["access_token"]
        return self._tokens[scope]

    async def bc_as_service(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A BC API call with the integration's token; `path` relative to `{bc_root}/` (e.g. `api/v2.0/...`)."""
        headers = {"Authorization": f"Bearer {await self.token(BC_SCOPE)}", **kwargs.pop("headers", {})}
        return await self.http.request(method, f"{self.bc_root}/{path}", headers=headers, **kwargs)

    async def integration_tag(self) -> str:
        """The installation's integration tag: random, generated by the first process that needed it (the api
        at start) and kept in the store (service/store/installation.py)."""
        from service.settings import Settings
        from service.store.db import Database
        from service.store.installation import integration_tag

        db = Database(self.database_url)
        try:
            return await integration_tag(Settings(_env_file=None, database_url=self.database_url), db)
        finally:
            await db.close()

    async def dv_as_service(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A Dataverse Web API call with the integration's token; `path` relative to /api/data/v9.2/.
        Add `params={"tag": await stack.integration_tag()}` to mark it as the integration's write, as the
        service does."""
        headers = {"Authorization": f"Bearer {await self.token(f'{self.dv_url}/.default')}",
                   "OData-Version": "4.0", "Accept": "application/json", **kwargs.pop("headers", {})}
        return await self.http.request(method, f"{self.dv_url}/{DV_API}/{path}", headers=headers, **kwargs)

    @property
    def bc_company_path(self) -> str:
        return f"api/v2.0/companies({self.company_id})"

    # ---- setup: webhook registration and the check against both systems' metadata ----------------
    async def register_webhooks(self) -> Json:
        """`POST /admin/setup` (what `bcsync setup` does): the mappings checked against both systems' live
        metadata, BC subscriptions for what BC can notify (the rest is polled), the Dataverse webhook with its
        steps and images. The setup report."""
        response = _check(await self.admin("setup", "POST", timeout=120))
        self.setup_report: Json = dict(response.json())
        return self.setup_report

    # ---- the service side ----------------------------------------------------------------------
    async def metrics(self) -> dict[str, float]:
        """The api's /metrics as `{'name{label="v",...}': value}` (labels sorted; no braces without labels)."""
        text = _check(await self.http.get(f"{self.api_url}/metrics")).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the api's samples named `name` whose labels include `labels` (0.0 when none)."""
        total = 0.0
        for key, value in (await self.metrics()).items():
            sample_name, _, rest = key.partition("{")
            if sample_name == name and all(f'{k}="{v}"' in rest.rstrip("}").split(",") for k, v in labels.items()):
                total += value
        return total

    async def admin(self, path: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """An /admin call with the bearer token (`path` with or without the /admin/ prefix); not checked."""
        path = path.lstrip("/").removeprefix("admin/")
        return await self.http.request(method, f"{self.api_url}/admin/{path}",
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs)

    def api_log_events(self, event: str | None = None) -> list[Json]:
        """JSON log lines of every api process started (restarts too)."""
        lines = [e for p in sorted(self.dir.glob("api-*.log")) for e in read_json_lines(p)]
        return [e for e in lines if event is None or e.get("event") == event]

    def worker_log_events(self, event: str | None = None) -> list[Json]:
        """JSON log lines of every worker started (killed ones too), each with `process`."""
        lines = [e for w in self.workers for e in w.events()]
        return [e for e in lines if event is None or e.get("event") == event]

    def change_events(self, mapping: str | None = None, record_id: str | None = None) -> list[Json]:
        """The workers' "change event received" lines, optionally for one mapping and/or record id."""
        return [e for e in self.worker_log_events("change event received")
                if (mapping is None or e.get("mapping") == mapping)
                and (record_id is None or str(e.get("record_id", "")).lower() == record_id.lower())]

    @staticmethod
    async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1,
                         message: str = "condition") -> Any:
        return await wait_until(predicate, timeout, interval, message)

    # ---- writes by the integration (echo-loop checks) ---------------------------------------
    async def mark_writes(self) -> WriteMark:
        """The current end of both request logs; pass it to `writes_since`."""
        return WriteMark(len(await self.bc.requests()), len(await self.dv.requests()))

    async def bc_writes_since(self, mark: WriteMark) -> list[Json]:
        """POST/PATCH/DELETE requests to the BC API since `mark` (all are the integration's: humans use the
        control endpoints), without webhook subscription calls."""
        return [r for r in (await self.bc.requests())[mark.bc:]
                if r["method"] in WRITE_METHODS and not any(p in r["path"] for p in REGISTRATION_PATHS)]

    async def dv_writes_since(self, mark: WriteMark) -> list[Json]:
        """POST/PATCH/DELETE requests of the application user to the Dataverse Web API since `mark`, without
        webhook registration calls (a `$batch` POST counts as one write)."""
        app_user = (await self.dv.state())["application_user_id"]
        return [r for r in (await self.dv.requests())[mark.dataverse:]
                if r["method"] in WRITE_METHODS and r.get("user_id") == app_user
                and not any(p in r["path"] for p in REGISTRATION_PATHS)]

    async def writes_since(self, mark: WriteMark) -> int:
        return len(await self.bc_writes_since(mark)) + len(await self.dv_writes_since(mark))


    # ---- additions for the sync-engine acceptance tests (tests/e2e/test_sync_*.py) ----------------------------
    async def start_metered_worker(self, env: dict[str, str] | None = None) -> Process:
        """Start one more worker with its own /metrics port (the engine's counters live in the worker)."""
        port = free_port()
        worker = await self.start_worker({**(env or {}), "BCSYNC_WORKER_METRICS_PORT": str(port)})
        self.__dict__.setdefault("_worker_metrics_ports", {})[worker.name] = port
        return worker

    async def worker_metric(self, name: str, **labels: str) -> float:
        """Sum, over the running workers started by `start_metered_worker`, of the samples named `name` whose
        labels include `labels` (a worker's counters start at 0 with its process)."""
        total = 0.0
        ports: dict[str, int] = self.__dict__.get("_worker_metrics_ports", {})
        for worker in self.running_workers:
            if worker.name not in ports:
                continue
            text = _check(await self.http.get(f"http://127.0.0.1:{ports[worker.name]}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                        total += sample.value
        return total

    async def register_dataverse_webhook_named(self, name: str) -> list[str]:
        """One more Dataverse webhook (service endpoint `name`, same url and key) with Create/Update/Delete
        steps for every table of DV_TABLES: each change then posts one more RemoteExecutionContext."""
        endpoint = entity_id(await self.dv_as_service("POST", "serviceendpoints", json={
            "name": name, "url": f"{self.api_url}/webhooks/dataverse", "contract": 8, "authtype": 4,
            "authvalue": WEBHOOK_KEY, "messageformat": 2, "connectionmode": 1, "userclaim": 1}))
        messages = _check(await self.dv_as_service("GET", "sdkmessages", params={
            "$filter": "name eq 'Create' or name eq 'Update' or name eq 'Delete'"})).json()["value"]
        step_ids = []
        for message in messages:
            rows = _check(await self.dv_as_service("GET", "sdkmessagefilters", params={
                "$filter": f"_sdkmessageid_value eq {message['sdkmessageid']}"})).json()["value"]
            for row in (r for r in rows if r["primaryobjecttypecode"] in DV_TABLES):
                step_id = entity_id(await self.dv_as_service("POST", "sdkmessageprocessingsteps", json={
                    "name": f"{name}: {message['name']} of {row['primaryobjecttypecode']}", "stage": 40,
                    "mode": 1, "rank": 1, "supporteddeployment": 0, "asyncautodelete": False,
                    "sdkmessageid@odata.bind": f"/sdkmessages({message['sdkmessageid']})",
                    "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({row['sdkmessagefilterid']})",
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint})"}))
                if message["name"] in ("Update", "Delete"):
                    image_type, alias = (1, "PostImage") if message["name"] == "Update" else (0, "PreImage")
                    entity_id(await self.dv_as_service("POST", "sdkmessageprocessingstepimages", json={
                        "name": alias, "entityalias": alias, "imagetype": image_type,
                        "messagepropertyname": "Target",
                        "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})"}))
                step_ids.append(step_id)
        return step_ids


StackFactory = Callable[..., Awaitable[Stack]]  # the `make_stack` fixture

