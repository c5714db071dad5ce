"""Fixtures of the integration tests: the in-process sync world (sandbox + connectors + engine)."""

from tests.integration.sync_world import world  # noqa: F401 - registers the fixture
