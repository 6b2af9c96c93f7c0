"""SQL tables and queries as a source and a sink, through ADBC (Arrow all the way: no row objects).

A database source is a URI: ``postgresql://user@host:port/db?table=public.events`` or ``...?query=SELECT ...``,
and ``sqlite:///relative.db?table=t`` or ``sqlite:////absolute.db?query=...`` (SQLAlchemy's spelling).  Other
query parameters (``sslmode=...``) go to the driver.  Rows stream as Arrow batches: PostgreSQL's driver reads
the result with ``COPY ... TO STDOUT (FORMAT binary)`` and hands it over batch by batch, so memory stays flat.
Credentials come from the environment (``PGPASSWORD``, ``~/.pgpass``, ``PGSERVICE``...) or the URI; every
message, provenance tag and lineage entry shows the URI with its password masked (:func:`beamlearn.stores.redact`).

A partitioned read (``&partition_column=id&partitions=8``) is described by :func:`sql_splits`: plain URIs, each
reading one key range (``min``/``max`` of the column split into equal ranges; null keys go with the first), that
any engine can hand to its workers and read with :func:`read_sql` (Beam does, through its file splits).

Writing (:func:`write_sql`, ``?table=scores&mode=replace|append|create``) ingests into a staging table and swaps
it in within one transaction, so a write that fails midway leaves no partial table.

Examples
--------
>>> src = parse_uri("postgresql://me:pw@db:5432/shop?table=public.orders&partition_column=id&partitions=4")
>>> src.table, src.partition_column, src.partitions, src.connect_uri
('public.orders', 'id', 4, 'postgresql://me:pw@db:5432/shop')
>>> parse_uri("sqlite:///data/shop.db?query=SELECT 1").sql
'SELECT 1'
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from beamlearn.errors import DataError
from beamlearn.schema import tag_batch
from beamlearn.stores import redact

__all__ = ["is_sql_uri", "parse_uri", "check_uri", "SqlSource", "read_sql", "sql_splits", "write_sql",
           "plain_types", "quote_name"]

_SCHEMES = ("postgresql://", "postgres://", "sqlite://")
_OWN = ("table", "query", "partition_column", "partitions", "mode")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
MODES = ("replace", "append", "create")
BATCH_BYTES = 4 << 20  # the size of the batches PostgreSQL's driver decodes the COPY stream into


def is_sql_uri(path: Any) -> bool:
    """Whether ``path`` is a database URI (``postgresql://``, ``postgres://`` or ``sqlite://``)."""
    return isinstance(path, str) and path.lower().startswith(_SCHEMES)


@dataclass(frozen=True)
class SqlSource:
    """A parsed database URI: the driver, what to connect to, and beamlearn's own parameters."""

    uri: str
    driver: str
    connect_uri: str
    table: str | None
    query: str | None
    partition_column: str | None
    partitions: int
    mode: str

    @property
    def sql(self) -> str:
        """The query to run: the given one, or every column of the table."""
        return self.query if self.query is not None else f"SELECT * FROM {quote_name(self.table or '')}"

    @property
    def shown(self) -> str:
        """The URI with its password masked, for messages."""
        return redact(self.uri)


def quote_name(name: str) -> str:
    """``schema.table`` as ``"schema"."table"``; an error for anything but plain identifiers."""
    parts = name.split(".")
    if not name or not all(_IDENT.match(p) for p in parts):
        raise DataError(f"{name!r} is not a table or column name (letters, digits, _ and $, optionally "
                        f"schema.table)")
    return ".".join(f'"{p}"' for p in parts)


def parse_uri(uri: str) -> SqlSource:
    """Split a database URI into what the driver gets and beamlearn's ``table``, ``query``,
    ``partition_column``, ``partitions`` and ``mode``; an error naming the URI for a bad one."""
    parts = urlsplit(uri)
    params = _params(parts.query)
    own = {k: v for k, v in params if k in _OWN}
    rest = [(k, v) for k, v in params if k not in _OWN]
    shown = redact(uri)
    if ("table" in own) == ("query" in own):
        raise DataError(f"{shown}: give exactly one of ?table=NAME or ?query=SELECT ...")
    if "table" in own:
        quote_name(own["table"])
    try:
        partitions = int(own.get("partitions", "1"))
    except ValueError:
        raise DataError(f"{shown}: partitions must be a whole number") from None
    column = own.get("partition_column")
    if column is not None:
        quote_name(column)
    if partitions < 1 or (partitions > 1 and column is None):
        raise DataError(f"{shown}: partitions=N (N >= 1) needs partition_column=COLUMN")
    mode = own.get("mode", "replace")
    if mode not in MODES:
        raise DataError(f"{shown}: mode must be one of {', '.join(MODES)}")
    if parts.scheme.lower() == "sqlite":
        driver = "sqlite"
        path = parts.path.removeprefix("/")  # sqlite:///rel, sqlite:////abs
        connect = path or ":memory:"
    else:
        driver = "postgresql"
        connect = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest, quote_via=quote), ""))
    return SqlSource(uri, driver, connect, own.get("table"), own.get("query"), column, partitions, mode)


def _params(query: str) -> list[tuple[str, str]]:
    """``k=v&...`` decoded with ``%XX`` escapes only: a ``+`` stays a plus (``SELECT a+b``), unlike form
    decoding."""
    return [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in query.split("&") if p)]


def check_uri(uri: str) -> str:
    """``uri`` itself once it parses (an early, clear error for a malformed database URI)."""
    parse_uri(uri)
    return uri


def _connect(src: SqlSource) -> Any:
    try:
        if src.driver == "sqlite":
            from adbc_driver_sqlite import dbapi
        else:
            from adbc_driver_postgresql import dbapi
    except ImportError:
        raise DataError(f"reading {src.driver} needs the ADBC driver: pip install 'beamlearn[sql]' "
                        f"(adbc-driver-{src.driver})") from None
    try:
        return dbapi.connect(src.connect_uri)
    except dbapi.Error as exc:
        raise _failure(src, exc, "cannot connect to") from None


def _failure(src: SqlSource, exc: BaseException, what: str) -> DataError:
    text = " ".join(str(exc).split())
    text = re.sub(r"^(?:[A-Z_]+: )?(?:\[[^\]]*\] )?", "", text)
    return DataError(redact(f"{what} {src.shown}: {text}"))


def read_sql(uri: str, *, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The rows of a table or query as batches of at most ``batch_size`` rows, streamed (a server-side COPY
    for PostgreSQL), each tagged with the masked URI and its row offset."""
    src = parse_uri(uri)
    conn = _connect(src)
    try:
        cur = conn.cursor()
        if src.driver == "postgresql":  # the driver's batches (default 16 MB) bound what is held at once
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
        reader = _execute(conn, cur, src)
        offset = 0
        empty = True
        for big in _guarded(reader, src):
            big = plain_types(big)
            for start in range(0, big.num_rows, batch_size):
                part = big.slice(start, batch_size)
                empty = False
                yield tag_batch(part, src.shown, offset)
                offset += part.num_rows
        if empty:
            yield tag_batch(plain_types(pa.RecordBatch.from_pylist([], schema=reader.schema)), src.shown, 0)
    finally:
        conn.close()


def _execute(conn: Any, cur: Any, src: SqlSource) -> Any:
    """Run the source's query and return its record batch reader; a statement PostgreSQL cannot ``COPY`` out
    (``SHOW``, ...) is run again without COPY."""
    try:
        cur.execute(src.sql)
        return cur.fetch_record_batch()
    except Exception as exc:  # noqa: BLE001 - the driver's errors (missing table, bad SQL) become one line
        if src.driver != "postgresql" or "could not begin COPY" not in str(exc):
            raise _failure(src, exc, "cannot read") from None
    try:
        conn.rollback()
        cur.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
        cur.execute(src.sql)
        return cur.fetch_record_batch()
    except Exception as exc:  # noqa: BLE001
        raise _failure(src, exc, "cannot read") from None


def plain_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with the drivers' extension types as plain Arrow: PostgreSQL ``numeric`` (text underneath) as
    float64, ``json``/``uuid``/other extensions as their storage (string, binary)."""
    if not any(isinstance(f.type, pa.BaseExtensionType) for f in batch.schema):
        return batch
    import pyarrow.compute as pc

    cols, fields = [], []
    for f, col in zip(batch.schema, batch.columns):
        if isinstance(f.type, pa.BaseExtensionType):
            col = col.storage
            if getattr(f.type, "type_name", None) == "numeric" and pa.types.is_string(col.type):
                col = pc.cast(col, pa.float64())
            f = pa.field(f.name, col.type, f.nullable)
        cols.append(col)
        fields.append(f)
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields, metadata=batch.schema.metadata))


def _guarded(reader: Any, src: SqlSource) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a failure mid-stream names the source
            raise _failure(src, exc, "cannot read") from None
        yield batch


def _scalar(conn: Any, src: SqlSource, sql: str) -> tuple:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        return cur.fetchone()
    except Exception as exc:  # noqa: BLE001
        raise _failure(src, exc, "cannot read") from None
    finally:
        cur.close()


def sql_splits(uri: str) -> list[str]:
    """The URIs of the key ranges of a partitioned read (``partition_column`` and ``partitions``): integer
    ranges of equal width between the column's min and max, each a ``query=`` URI any engine's worker can read
    with :func:`read_sql`; rows with a null key go with the first.  ``[uri]`` for an unpartitioned source."""
    src = parse_uri(uri)
    if src.partition_column is None:
        return [uri]
    col = quote_name(src.partition_column)
    conn = _connect(src)
    try:
        lo, hi = _scalar(conn, src, f"SELECT min({col}), max({col}) FROM ({src.sql}) AS s")
    finally:
        conn.close()
    if lo is None:
        bounds = [(None, None)]
    elif not all(isinstance(v, int) for v in (lo, hi)):
        raise DataError(f"{src.shown}: partition_column {src.partition_column!r} must be an integer column")
    else:
        n = max(1, min(src.partitions, hi - lo + 1))
        edges = [lo + (hi - lo + 1) * i // n for i in range(n)] + [hi + 1]
        bounds = list(itertools.pairwise(edges))
    out = []
    for i, (a, b) in enumerate(bounds):
        where = f"{col} IS NULL" if a is None else f"{col} >= {a} AND {col} < {b}"
        if i == 0 and a is not None:
            where = f"({where}) OR {col} IS NULL"
        out.append(_with_query(uri, f"SELECT * FROM ({src.sql}) AS s WHERE {where}"))
    return out


def _with_query(uri: str, sql: str) -> str:
    base, _, query = uri.partition("?")
    params = [(k, v) for k, v in _params(query) if k not in _OWN]
    return base + "?" + urlencode([*params, ("query", sql)], quote_via=quote)


def write_sql(batches: Iterable[pa.RecordBatch], uri: str, *, schema: pa.Schema | None = None) -> int:
    """Write batches to the ``table`` of ``uri`` (``mode``: replace it, append to it, or create it and fail if
    it exists); returns the rows written.  Rows go to a staging table first, swapped in within one transaction:
    a failure at any point leaves the database as it was."""
    src = parse_uri(uri)
    if src.table is None:
        raise DataError(f"{src.shown}: writing needs ?table=NAME (and optionally &mode=replace|append|create)")
    it = iter(batches)
    first = next(it, None)
    schema = first.schema if first is not None else schema
    if schema is None:
        raise DataError(f"{src.shown}: nothing to write (no batches and no schema)")
    schema = schema.remove_metadata()
    count = [0]

    def rows() -> Iterator[pa.RecordBatch]:
        for b in _chain(first, it):
            b = b.replace_schema_metadata(None)
            count[0] += b.num_rows
            yield b

    *space, name = src.table.split(".")
    staging = f"{name}__beamlearn_{uuid.uuid4().hex[:10]}"
    target, staged = quote_name(src.table), quote_name(".".join([*space, staging]))
    conn = _connect(src)
    try:
        cur = conn.cursor()
        exists = _exists(conn, src, space, name)
        if exists and src.mode == "create":
            raise DataError(f"{src.shown}: table {src.table} exists (use mode=replace or mode=append)")
        try:
            cur.adbc_ingest(staging, pa.RecordBatchReader.from_batches(schema, rows()), mode="create",
                            db_schema_name=space[0] if space else None)
            if exists and src.mode == "append":
                cols = ", ".join(quote_name(c) for c in schema.names)
                cur.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {staged}")
                cur.execute(f"DROP TABLE {staged}")
            else:
                if exists:
                    cur.execute(f"DROP TABLE {target}")
                cur.execute(f"ALTER TABLE {staged} RENAME TO {quote_name(name)}")
            conn.commit()
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - the driver's errors become one line naming the table
            raise _failure(src, exc, "cannot write") from None
    except BaseException:
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001, S110 - the connection may be gone; the server rolls back then
            pass
        raise
    finally:
        conn.close()
    return count[0]


def _chain(first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if first is not None:
        yield first
    yield from rest


def _exists(conn: Any, src: SqlSource, space: list[str], name: str) -> bool:
    if src.driver == "sqlite":
        sql = f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{name}'"
    else:
        sql = f"SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = '{name}'" + (
            f" AND schemaname = '{space[0]}'" if space else " AND schemaname = ANY (current_schemas(false))")
    return bool(_scalar(conn, src, sql)[0])
