"""`bcsync sandbox`: Entra (HTTPS), Business Central and Dataverse stand-ins in one process and loop.

`run(config)` blocks until SIGINT/SIGTERM; `serve(config, stop)` is the same as a coroutine (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI

from sandbox.bc.app import create_app as create_bc_app
from sandbox.config import SandboxConfig
from sandbox.entra import create_app as create_entra_app
from sandbox.tokens import TokenIssuer


def make_tls(ca_file: str, directory: str) -> tuple[str, str, str]:
    """A fresh CA (written to `ca_file`) and a server certificate for 127.0.0.1/localhost signed by it.

    Returns the absolute CA path and the paths of the server certificate chain and key (in `directory`).
    """
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bcsync sandbox CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    Path(ca_file).write_bytes(ca.public_bytes(pem))
    cert_path, key_path = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    Path(cert_path).write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    Path(key_path).write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return os.path.abspath(ca_file), cert_path, key_path


def dataverse_app(config: SandboxConfig, tokens: TokenIssuer) -> FastAPI:
    """The Dataverse stand-in if its package is there; otherwise a placeholder so the port listens."""
    try:
        from sandbox.dataverse.app import create_app
    except Exception as exc:  # not built yet, or broken: BC and Entra must still come up
        print(f"bcsync sandbox: Dataverse stand-in unavailable ({exc!r}); serving a placeholder", flush=True)
        app = FastAPI(title="bcsync sandbox: Dataverse (not available)")
        reason = str(exc)

        @app.get("/_sandbox/state")
        async def state() -> dict[str, str]:
            return {"dataverse": "unavailable", "reason": reason}

        return app
    return create_app(config, tokens)


class _Server(uvicorn.Server):
    """uvicorn's own signal capture is per server; `serve()` handles signals once for all three."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _server(app: FastAPI, port: int, cert: str | None = None, key: str | None = None) -> _Server:
    # A bounded graceful shutdown: idle keep-alive clients (MSAL's requests session over TLS) would
    # otherwise hold it open.
    return _Server(uvicorn.Config(app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key,
                                  log_level="warning", timeout_graceful_shutdown=2))


def check_ports(*ports: int) -> None:
    """One clear line instead of uvicorn's traceback when a port is taken."""
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                raise SystemExit(f"bcsync sandbox: cannot listen on 127.0.0.1:{port} ({exc.strerror})") from exc


async def serve(config: SandboxConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    check_ports(config.entra_port, config.bc_port, config.dataverse_port)
    tokens = TokenIssuer(tenant_id=config.tenant_id, issuer_host=f"https://127.0.0.1:{config.entra_port}")
    with tempfile.TemporaryDirectory(prefix="bcsync-sandbox-") as tmp:
        ca_path, cert, key = make_tls(config.ca_file, tmp)
        print(f"bcsync sandbox: CA certificate written to {ca_path}", flush=True)
        servers = [
            _server(create_entra_app(config, tokens), config.entra_port, cert, key),
            _server(create_bc_app(config, tokens), config.bc_port),
            _server(dataverse_app(config, tokens), config.dataverse_port),
        ]
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

        async def stopper() -> None:
            await stop.wait()
            for server in servers:
                server.should_exit = True

        watcher = asyncio.create_task(stopper())
        try:
            await asyncio.gather(*(s.serve() for s in servers))
        finally:
            for server in servers:  # one failed: stop the others too
                server.should_exit = True
            watcher.cancel()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)


def run(config: SandboxConfig) -> None:
    """Start the three stand-ins and block until SIGINT/SIGTERM."""
    print(f"bcsync sandbox: Entra https://127.0.0.1:{config.entra_port}/{config.tenant_id}, "
          f"BC http://127.0.0.1:{config.bc_port}/v2.0/{config.tenant_id}/{config.environment}, "
          f"Dataverse http://127.0.0.1:{config.dataverse_port}", flush=True)
    asyncio.run(serve(config))
