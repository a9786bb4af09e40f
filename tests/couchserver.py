"""PouchDB Server fixture (filled in by the CouchDB backend work)."""

import pytest


@pytest.fixture(scope="session")
def couch_server():
    pytest.skip("CouchDB backend not implemented yet")
