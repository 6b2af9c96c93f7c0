"""Real servers for the store and SQL tests: moto's S3 server and a PostgreSQL cluster of our own (initdb +
pg_ctl on a socket directory and a free port), started once per test session and stopped at its end.

Without PostgreSQL installed the SQL tests skip, except on CI (``CI=true``), where they fail: ``.ci/run``
installs it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

PG_PASSWORD = "s3cret-pw-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3(monkeypatch_session):
    """An S3 API on 127.0.0.1 (moto), with the standard AWS environment pointing at it; yields its endpoint."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch_session.setenv(k, v)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own on 127.0.0.1 (password auth over TCP); yields the URI of its database
    ``beamlearn`` as user ``beamlearn`` *without* the password (given through ``PGPASSWORD`` in the tests)."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed; .ci/run installs it")
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    root = tempfile.mkdtemp(prefix="beamlearn-pg-")
    os.chmod(root, 0o755)
    data, sock, pwfile = (os.path.join(root, n) for n in ("data", "sock", "pw"))
    os.mkdir(sock)
    with open(pwfile, "w") as fh:
        fh.write(PG_PASSWORD + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres system user
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "beamlearn", f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=64MB", "start")
    except subprocess.CalledProcessError as exc:
        log = open(os.path.join(root, "log")).read() if os.path.exists(os.path.join(root, "log")) else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')} {log}")
    try:
        run(f"{bindir}/createdb", "-h", sock, "-p", str(port), "-U", "beamlearn", "beamlearn")
        yield f"postgresql://beamlearn@127.0.0.1:{port}/beamlearn"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg(postgres, monkeypatch):
    """The server's URI, with its password in ``PGPASSWORD`` for this test."""
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    return postgres
