"""Files where they live: ``s3://``, ``gs://``, ``hdfs://``, ``az://`` (and other fsspec schemes) as paths.

Every path beamlearn accepts may be a URI.  It is opened with pyarrow's own filesystems (S3, GCS, HDFS, Azure)
when pyarrow knows the scheme, else through fsspec (``s3fs``, ``gcsfs``, ``adlfs``, ...) when that is installed.
Credentials come only from the environment and the standard config files (``AWS_ACCESS_KEY_ID``,
``~/.aws/credentials``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...); an S3-compatible endpoint from the standard
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``.  No credential is ever written to specs, artifacts or lineage,
and every message shows a URI through :func:`redact`.

Writes are atomic where the store allows: an object store shows a new object only once its upload completes
(S3, GCS, Azure), so a failed write leaves nothing; other filesystems get a temporary name, then a rename.

Examples
--------
>>> is_uri("s3://bucket/data/*.parquet"), is_uri("data/x.csv"), is_uri("file:///tmp/x.csv")
(True, False, False)
>>> redact("postgresql://me:s3cret@db:5432/x?password=p&table=t")
'postgresql://me:***@db:5432/x?password=***&table=t'
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
import uuid
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from beamlearn.errors import DataError

__all__ = ["is_uri", "redact", "filesystem", "expand", "open_input", "exists", "read_bytes", "write_bytes",
           "upload", "download", "size", "join", "make_folder", "local_only"]

_SECRET_PARAMS = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|key|sig|signature|"
                            r"access_key|secret_key|sas|credential)[^=&]*=)([^&#]*)")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:?#]*):([^/@?#]*)@")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_SAS_TOKEN")


def is_uri(path: Any) -> bool:
    """Whether ``path`` names a file through a scheme other than the local ``file://``."""
    return isinstance(path, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+://", path) is not None \
        and not path.startswith("file://")


def redact(text: str) -> str:
    """``text`` with a URI's password, secret query parameters and secret environment values masked."""
    text = _SECRET_PARAMS.sub(r"\1***", _USERINFO.sub(r"\1:***@", str(text)))
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _s3_options() -> dict[str, Any]:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    return {"endpoint_override": parts.netloc, "scheme": parts.scheme or "https"}


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, netloc: str, endpoint: str | None) -> pafs.FileSystem:
    if scheme in ("s3", "s3a"):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return pafs.S3FileSystem(**_s3_options(), **({"region": region} if region else {}))
    if scheme == "az" and os.environ.get("AZURE_STORAGE_ACCOUNT_NAME"):  # az://container/path of that account
        return pafs.AzureFileSystem(account_name=os.environ["AZURE_STORAGE_ACCOUNT_NAME"])
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    except OSError as exc:  # e.g. HDFS without Java and libhdfs
        raise DataError(redact(f"cannot open {scheme}://{netloc}: {str(exc).splitlines()[0]}")) from None
    try:
        import fsspec
    except ImportError:
        raise DataError(f"no filesystem for {scheme}:// (pyarrow does not know it; install fsspec and its "
                        f"{scheme} package, e.g. s3fs, gcsfs or adlfs)") from None
    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError, OSError) as exc:
        raise DataError(f"no filesystem for {scheme}:// ({exc})") from None


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem holding ``uri`` and the path of ``uri`` in it (``bucket/key`` for object stores)."""
    scheme, netloc, path = _parts(uri)
    fs = _filesystem(scheme, netloc.rsplit("@", 1)[-1],
                     os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    if scheme == "hdfs":
        return fs, "/" + path
    return fs, f"{netloc.rsplit('@', 1)[-1]}/{path}".rstrip("/")


def _parts(uri: str) -> tuple[str, str, str]:
    """``(scheme, netloc, path)``: split by hand, since ``?`` and ``#`` are glob and name characters here."""
    scheme, _, rest = uri.partition("://")
    netloc, _, path = rest.partition("/")
    return scheme.lower(), netloc, path


def _join(uri: str, path: str) -> str:
    """The URI of ``path`` (as the filesystem lists it) in the store of ``uri``."""
    scheme, netloc, _ = _parts(uri)
    if scheme == "hdfs":
        return f"{scheme}://{netloc}/{path.lstrip('/')}"
    return f"{scheme}://{path.lstrip('/')}"


def failure(uri: str, exc: BaseException, what: str = "cannot read") -> DataError:
    """A :class:`DataError` for a failed store operation on ``uri``: one line, credentials masked."""
    text = str(exc).split("\n")[0]
    low = text.lower()
    if "NO_SUCH_BUCKET" in text or ("bucket" in low and ("not found" in low or "does not exist" in low)):
        reason = "no such bucket"
    elif "Path does not exist" in text or "NO_SUCH_KEY" in text or isinstance(exc, FileNotFoundError):
        reason = "no such object"
    elif "ACCESS_DENIED" in text or "403" in text or "InvalidAccessKeyId" in text:
        reason = "access denied (check the credentials in the environment)"
    else:
        reason = text
    return DataError(redact(f"{what} {uri}: {reason}"))


def info(uri: str) -> pafs.FileInfo:
    """The store's file info for ``uri`` (a missing object has type ``NotFound``)."""
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise failure(uri, exc) from None


def exists(uri: str) -> bool:
    """Whether ``uri`` names an existing file."""
    return info(uri).type == pafs.FileType.File


def size(uri: str) -> int | None:
    """The size in bytes of the object at ``uri``."""
    return info(uri).size


def expand(uri: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files ``uri`` names, sorted: a glob (``*``, ``?``, ``[``, ``**``), a directory (its files ending in one
    of ``suffixes``, not starting with ``.`` or ``_``) or one file."""
    fs, path = filesystem(uri)
    try:
        if any(ch in path for ch in "*?["):
            base = re.split(r"[*?\[]", path, maxsplit=1)[0].rsplit("/", 1)[0]
            listed = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            found = sorted(f.path for f in listed if f.type == pafs.FileType.File
                           and fnmatch.fnmatchcase(f.path.lstrip("/"), path.replace("**/", "*")))
            if not found:
                raise DataError(f"no file matches {redact(uri)!r}{_no_bucket(fs, path)}")
            return [_join(uri, p) for p in found]
        one = fs.get_file_info(path)
        if one.type == pafs.FileType.File:
            return [uri]
        if one.type == pafs.FileType.Directory:
            listed = fs.get_file_info(pafs.FileSelector(path, recursive=False))
            return sorted(_join(uri, f.path) for f in listed if f.type == pafs.FileType.File
                          and f.base_name.lower().endswith(suffixes) and not f.base_name.startswith((".", "_")))
    except OSError as exc:
        raise failure(uri, exc) from None
    raise DataError(f"no such file: {redact(uri)!r}{_no_bucket(fs, path)}")


def _no_bucket(fs: pafs.FileSystem, path: str) -> str:
    """``" (no such bucket)"`` when the bucket of ``path`` on an object store does not exist, else ``""``."""
    if fs.type_name not in ("s3", "gcs", "abfs"):
        return ""
    try:
        missing = fs.get_file_info(path.split("/", 1)[0]).type == pafs.FileType.NotFound
    except OSError:
        return ""
    return " (no such bucket)" if missing else ""


def open_input(uri: str) -> Any:
    """A random-access file for reading ``uri`` (for Parquet footers and row groups)."""
    fs, path = filesystem(uri)
    try:
        return fs.open_input_file(path)
    except OSError as exc:
        raise failure(uri, exc) from None


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``."""
    with open_input(uri) as fh:
        return fh.read()


def download(uri: str, local: str) -> str:
    """Copy ``uri`` to the local file ``local`` (streamed); returns ``local``."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    except OSError as exc:
        raise failure(uri, exc) from None
    return local


def _atomic_target(fs: pafs.FileSystem, path: str) -> str:
    """Where to write before publishing ``path``: itself on object stores (an object appears whole or not at
    all), else a temporary sibling renamed afterwards."""
    if fs.type_name in ("s3", "gcs", "abfs"):
        return path
    head, _, tail = path.rpartition("/")
    return f"{head}/.beamlearn-{uuid.uuid4().hex}-{tail}" if head else f".beamlearn-{uuid.uuid4().hex}-{tail}"


def _publish(fs: pafs.FileSystem, tmp: str, path: str) -> None:
    if tmp != path:
        fs.move(tmp, path)


def upload(local: str, uri: str) -> None:
    """Copy the local file ``local`` to ``uri``, atomically where the store allows."""
    fs, path = filesystem(uri)
    tmp = _atomic_target(fs, path)
    try:
        with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        _publish(fs, tmp, path)
    except OSError as exc:
        if tmp != path:
            with _quiet():
                fs.delete_file(tmp)
        raise failure(uri, exc, "cannot write") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, atomically where the store allows."""
    fs, path = filesystem(uri)
    tmp = _atomic_target(fs, path)
    try:
        with fs.open_output_stream(tmp) as dst:
            dst.write(data)
        _publish(fs, tmp, path)
    except OSError as exc:
        raise failure(uri, exc, "cannot write") from None


def join(base: str, *names: str) -> str:
    """``names`` under the folder ``base``: a local path (:func:`os.path.join`) or a URI (joined with ``/``).

    >>> join("s3://b/out/", "model.blm"), join("out", "validation", "report.html")
    ('s3://b/out/model.blm', 'out/validation/report.html')
    """
    if not is_uri(base):
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])


def make_folder(folder: str) -> str:
    """Create the local folder ``folder`` (and its parents); a store URI needs nothing (an object store has no
    folders: its objects are named by their full path).  Returns ``folder``."""
    if not is_uri(folder):
        os.makedirs(folder, exist_ok=True)
    return folder


def local_only(path: str, what: str) -> str:
    """``path``, or a :class:`~beamlearn.errors.SpecError` naming ``what`` when ``path`` is a store URI: for the
    few outputs that are appended to or renamed in place (a checkpoint, a growing JSON-lines file), which an
    object store cannot do."""
    if is_uri(path):
        from beamlearn.errors import SpecError

        raise SpecError(f"{what} {redact(path)}: this output is written in place as it grows, so it must be a "
                        "local path (write it locally, then copy it to the store)")
    return path


def _quiet() -> Any:
    import contextlib

    return contextlib.suppress(Exception)
