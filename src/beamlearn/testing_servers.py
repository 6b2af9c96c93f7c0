"""Real servers on 127.0.0.1 for tests and benchmarks of the store and SQL sources: an S3 API (moto's server)
and a PostgreSQL cluster of our own (``initdb`` + ``pg_ctl`` in a temporary directory, on a free port).

Both are context managers that start the server, yield where it is, and stop it and remove its files on exit.

For example (as ``tests/stores/conftest.py`` and ``benchmarks/bench_io.py`` use them)::

    with postgres_server("pw") as uri:                    # PGPASSWORD=pw for the clients
        batches = list(beamlearn.io.read(uri + "?query=SELECT 1 AS one"))
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

__all__ = ["free_port", "s3_server", "postgres_bin", "postgres_server", "PG_USER"]

PG_USER = "beamlearn"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields its endpoint URL (``http://127.0.0.1:PORT``).  Point clients at it
    with ``AWS_ENDPOINT_URL`` (and any ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def postgres_bin() -> str | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian's newest ``/usr/lib/postgresql/*/bin``, else ``PATH``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


@contextlib.contextmanager
def postgres_server(password: str, database: str = "beamlearn") -> Iterator[str]:
    """A PostgreSQL server of our own on 127.0.0.1 (password authentication over TCP, superuser
    :data:`PG_USER`); yields ``postgresql://beamlearn@127.0.0.1:PORT/DATABASE``, without the password (give it
    through ``PGPASSWORD``).  As root, the server runs as the ``postgres`` system user (initdb refuses root).
    Raises RuntimeError if PostgreSQL is not installed or does not start (with its log)."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL (initdb, pg_ctl) is not installed: apt-get install postgresql")
    root = tempfile.mkdtemp(prefix="beamlearn-pg-")
    os.chmod(root, 0o755)
    data, sock, pwfile, log = (os.path.join(root, n) for n in ("data", "sock", "pw", "log"))
    os.mkdir(sock)
    with open(pwfile, "w") as fh:
        fh.write(password + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:
        for path in (root, sock, pwfile):
            shutil.chown(path, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", PG_USER, f"--pwfile={pwfile}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=64MB", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        text = open(log).read() if os.path.exists(log) else ""
        shutil.rmtree(root, ignore_errors=True)
        stderr = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(f"PostgreSQL did not start: {stderr.decode(errors='replace')} {text}") from None
    try:
        run(f"{bindir}/createdb", "-h", sock, "-p", str(port), "-U", PG_USER, database)
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
