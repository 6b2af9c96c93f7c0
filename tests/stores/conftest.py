"""Real servers for the store and SQL tests (:mod:`beamlearn.testing_servers`): moto's S3 server and a
PostgreSQL cluster of our own, started once per test session and stopped at its end.

Without PostgreSQL installed the SQL tests skip, except on CI (``CI=true``), where they fail: ``.ci/run``
installs it."""

from __future__ import annotations

import os

import pytest

from beamlearn.testing_servers import postgres_bin, postgres_server, s3_server

PG_PASSWORD = "s3cret-pw-42"


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="session")
def s3(monkeypatch_session):
    """An S3 API on 127.0.0.1 (moto), with the standard AWS environment pointing at it; yields its endpoint."""
    with s3_server() as endpoint:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch_session.setenv(k, v)
        yield endpoint


@pytest.fixture(scope="session")
def postgres(monkeypatch_session):
    """A PostgreSQL server of our own; yields its database's URI without the password, which is in
    ``PGPASSWORD`` (where libpq, hence ADBC and psycopg, find it)."""
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    try:
        server = postgres_server(PG_PASSWORD)
        uri = server.__enter__()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    monkeypatch_session.setenv("PGPASSWORD", PG_PASSWORD)
    yield uri
    server.__exit__(None, None, None)
