"""Dataverse stand-in of the sandbox: Web API v9.2, webhooks (RemoteExecutionContext) and control endpoints."""

from sandbox.dataverse.app import create_app

__all__ = ["create_app"]
