"""Saving and loading fitted pipelines: one zip file, safe to load.

Layout of an artifact (format version 1)::

    manifest.json          format and library versions, input/output schemas (readable), steps with their types,
                           parameters and states, lineage, and the SHA-256 of every other member
    arrays/N.npy           numeric arrays of states (read with ``allow_pickle=False``)
    schema/input.arrow     exact Arrow schemas (IPC), read back without any code execution
    schema/output.arrow
    (zip comment)          ``beamlearn:1:sha256=<digest of every byte before it>:hmac=<signature or dashes>``

Loading never unpickles and never imports anything the artifact names: step types are looked up in the
registry of known steps (:func:`beamlearn.register_step`).  Unknown step types, format versions newer than this
library reads, duplicate, absolute or path-traversal member names, and any checksum mismatch are rejected with
:class:`~beamlearn.errors.ArtifactError`.

Checksums catch corruption, not an attacker who can rewrite the whole file.  For that, set
``BEAMLEARN_SIGNING_KEY`` (any secret string): :func:`save` then signs with HMAC-SHA256, and :func:`load`
refuses artifacts that are unsigned or signed with another key.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import io as _io
import json
import os
import re
import tempfile
import zipfile
from typing import Any

import numpy as np
import pyarrow as pa

from beamlearn import stores
from beamlearn.batches import schema_from_bytes, schema_to_bytes, schema_to_json
from beamlearn.errors import ArtifactError, BeamlearnError
from beamlearn.pipeline import FittedPipeline, provide
from beamlearn.steps.base import step_class
from beamlearn.version import __version__

__all__ = ["save", "load", "FORMAT_VERSION", "SIGNING_KEY_ENV", "encode_state", "decode_state"]

FORMAT = "beamlearn.pipeline"
FORMAT_VERSION = 1
SIGNING_KEY_ENV = "BEAMLEARN_SIGNING_KEY"
MAX_UNCOMPRESSED = 4 << 30
_TRAILER = re.compile(rb"^beamlearn:(\d+):sha256=([0-9a-f]{64}):hmac=([0-9a-f]{64}|-{64})$")
_TRAILER_LEN = len(b"beamlearn:1:sha256=") + 64 + len(b":hmac=") + 64
_MEMBER = re.compile(r"^(manifest\.json|arrays/[0-9]+\.npy|schema/(input|output)\.arrow|blobs/[0-9]+\.bin)$")


# ---------------------------------------------------------------------------------------------- state codec
def encode_state(obj: Any, members: dict[str, bytes]) -> Any:
    """Turn plain state data into JSON, moving numeric arrays into ``.npy`` members of ``members``."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise BeamlearnError(f"state keys must be strings, got {k!r}")
            out[k] = encode_state(v, members)
        return out
    if isinstance(obj, (list, tuple)):
        return [encode_state(v, members) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biufc":
            name = f"arrays/{sum(1 for m in members if m.startswith('arrays/'))}.npy"
            buf = _io.BytesIO()
            np.save(buf, np.ascontiguousarray(obj), allow_pickle=False)
            members[name] = buf.getvalue()
            return {"__ndarray__": name}
        if obj.dtype.kind in "US":
            return {"__strarray__": obj.tolist()}
        if obj.dtype.kind == "O":
            return {"__objarray__": [encode_state(v, members) for v in obj.tolist()]}
        raise BeamlearnError(f"cannot store an array of dtype {obj.dtype}")
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, bytes):
        name = f"blobs/{sum(1 for m in members if m.startswith('blobs/'))}.bin"
        members[name] = obj
        return {"__bytes__": name}
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise BeamlearnError(f"cannot store a state value of type {type(obj).__name__}: states must be plain data")


def decode_state(obj: Any, members: dict[str, bytes]) -> Any:
    """The inverse of :func:`encode_state`; arrays are read with ``allow_pickle=False``."""
    if isinstance(obj, dict):
        if len(obj) == 1:
            (k, v), = obj.items()
            if k == "__ndarray__":
                try:
                    return np.load(_io.BytesIO(_member(members, v)), allow_pickle=False)
                except (ValueError, OSError, EOFError) as exc:  # object arrays (pickles) included
                    raise ArtifactError(f"member {v!r} is not a plain numeric .npy array ({exc})") from None
            if k == "__strarray__":
                return np.array(v)
            if k == "__objarray__":
                return np.array([decode_state(x, members) for x in v], dtype=object)
            if k == "__float__":
                if v not in ("nan", "inf", "-inf"):
                    raise ArtifactError(f"bad float literal {v!r} in manifest")
                return float(v)
            if k == "__bytes__":
                return _member(members, v)
        return {k: decode_state(v, members) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_state(v, members) for v in obj]
    return obj


def _member(members: dict[str, bytes], name: Any) -> bytes:
    if not isinstance(name, str) or name not in members:
        raise ArtifactError(f"the manifest refers to a member {name!r} that the artifact does not contain")
    return members[name]


# ---------------------------------------------------------------------------------------------- save
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str | None:  # without importing it (scikit-learn takes a second to import)
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"beamlearn": __version__, "numpy": np.__version__, "pyarrow": pa.__version__,
            "scikit-learn": installed("scikit-learn"), "apache-beam": installed("apache-beam")}


def _signing_key() -> bytes | None:
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode() if key else None


def to_bytes(fitted: Any) -> bytes:
    """The artifact of ``fitted`` as bytes (what :func:`save` writes)."""
    members: dict[str, bytes] = {
        "schema/input.arrow": schema_to_bytes(fitted.input_schema),
        "schema/output.arrow": schema_to_bytes(fitted.output_schema),
    }
    steps = [{"type": type(s).__name__, "params": encode_state(s.get_params(), members),
              "state": encode_state(st, members)} for s, st in zip(fitted.steps, fitted.states)]
    lineage = dict(fitted.lineage)
    lineage.setdefault("versions", _versions())
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "library_version": _versions()["beamlearn"],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "name": fitted.name,
        "input_schema": schema_to_json(fitted.input_schema), "output_schema": schema_to_json(fitted.output_schema),
        "required_columns": list(fitted.required_columns), "steps": steps,
        "lineage": encode_state(lineage, members),
    }
    if fitted.accumulators is not None:  # what FittedPipeline.update merges new data into (None: not mergeable)
        manifest["accumulators"] = [None if a is None else encode_state(a, members) for a in fitted.accumulators]
    manifest["members"] = {n: hashlib.sha256(b).hexdigest() for n, b in sorted(members.items())}
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_zinfo("manifest.json"), json.dumps(manifest, indent=1, allow_nan=False).encode())
        for name in sorted(members):
            zf.writestr(_zinfo(name), members[name])
    body = buf.getvalue()
    if not body.endswith(b"\x00\x00"):  # the zip comment length field is the last two bytes
        raise ArtifactError("internal error: unexpected zip layout")
    head = body[:-2]
    digest = hashlib.sha256(head).hexdigest().encode()
    key = _signing_key()
    mac = hmac.new(key, head, hashlib.sha256).hexdigest().encode() if key else b"-" * 64
    trailer = b"beamlearn:%d:sha256=%s:hmac=%s" % (FORMAT_VERSION, digest, mac)
    return head + len(trailer).to_bytes(2, "little") + trailer


def _zinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def save(fitted: Any, path: str) -> str:
    """Write ``fitted`` to ``path`` atomically (temp file + rename; on an object store such as ``s3://`` one
    PUT, which is atomic per object: :mod:`beamlearn.stores`); returns ``path``."""
    data = to_bytes(fitted)
    if stores.is_uri(path):
        try:
            stores.write_bytes(path, data)
        except BeamlearnError as exc:
            raise ArtifactError(str(exc)) from None
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".beamlearn-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------------- load
def load(path: str) -> Any:
    """Load a fitted pipeline saved by :func:`save`, verifying integrity (and signature, if a key is set)."""
    data = _read(path)
    try:
        return from_bytes(data)
    except ArtifactError as exc:
        raise ArtifactError(f"{stores.redact(path)}: {exc}") from None


def _read(path: str) -> bytes:
    """The bytes of the artifact at ``path`` (a local file, or a URI of an object store)."""
    if stores.is_uri(path):
        try:
            return stores.read_bytes(path)
        except BeamlearnError as exc:
            raise ArtifactError(f"cannot read the artifact: {exc}") from None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the artifact ({exc.strerror or exc})") from None


def from_bytes(data: bytes) -> Any:
    """Load a fitted pipeline from artifact bytes."""
    manifest, members = _verified_members(data)
    if manifest.get("format") != FORMAT:
        raise ArtifactError("not a beamlearn pipeline artifact")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ArtifactError(f"artifact format version {version!r} cannot be read by this beamlearn (reads up to "
                            f"{FORMAT_VERSION}); upgrade beamlearn to load it")
    steps, states = [], []
    for i, entry in enumerate(manifest.get("steps", [])):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ArtifactError(f"step {i} is malformed")
        cls = step_class(entry["type"])
        params = decode_state(entry.get("params", {}), members)
        unknown = set(params) - set(cls.param_names())
        if unknown:
            raise ArtifactError(f"step {i} ({entry['type']}) has unknown parameters: {sorted(unknown)}")
        try:
            steps.append(cls(**params))
        except (TypeError, ValueError, BeamlearnError) as exc:
            raise ArtifactError(f"step {i} ({entry['type']}) has invalid parameters: {exc}") from None
        states.append(decode_state(entry.get("state", {}), members))
    if int(_TRAILER.match(data[-_TRAILER_LEN:]).group(1)) != version:  # type: ignore[union-attr]
        raise ArtifactError(f"artifact format version {version!r} disagrees with the file's trailer")
    try:
        input_schema = schema_from_bytes(_member(members, "schema/input.arrow"))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, OSError) as exc:
        raise ArtifactError(f"schema/input.arrow is not an Arrow schema ({exc})") from None
    lineage = decode_state(manifest.get("lineage", {}), members)
    accumulators = manifest.get("accumulators")
    if accumulators is not None:
        if not isinstance(accumulators, list) or len(accumulators) != len(steps):
            raise ArtifactError("the saved accumulators do not match the steps (one entry per step expected)")
        accumulators = [None if a is None else decode_state(a, members) for a in accumulators]
    try:
        return FittedPipeline(steps, states, input_schema, name=manifest.get("name"), lineage=lineage,
                              accumulators=accumulators)
    except ArtifactError:  # a step that verifies its own state (e.g. an untrusted skops blob) said why
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, BeamlearnError) as exc:
        raise ArtifactError(f"the fitted states do not match their steps ({type(exc).__name__}: {exc})") from None


def read_manifest(path: str) -> dict[str, Any]:
    """The verified manifest of the artifact at ``path`` (for ``beamlearn inspect``)."""
    manifest, _ = _verified_members(_read(path))
    return manifest


def _verified_members(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    if len(data) < _TRAILER_LEN + 24:
        raise ArtifactError("file is too short to be a beamlearn artifact")
    trailer = data[-_TRAILER_LEN:]
    m = _TRAILER.match(trailer)
    if m is None or int.from_bytes(data[-_TRAILER_LEN - 2:-_TRAILER_LEN], "little") != _TRAILER_LEN:
        raise ArtifactError("not a beamlearn artifact, or its integrity trailer is damaged")
    if not 1 <= int(m.group(1)) <= FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {int(m.group(1))} cannot be read by this beamlearn (reads up "
                            f"to {FORMAT_VERSION}), or its integrity trailer is damaged")
    head = data[:-_TRAILER_LEN - 2]
    if not hmac.compare_digest(hashlib.sha256(head).hexdigest().encode(), m.group(2)):
        raise ArtifactError("checksum mismatch: the file is corrupted or was modified")
    key = _signing_key()
    if key is not None:
        if m.group(3) == b"-" * 64:
            raise ArtifactError(f"the artifact is not signed, and {SIGNING_KEY_ENV} is set: refusing to load it")
        if not hmac.compare_digest(hmac.new(key, head, hashlib.sha256).hexdigest().encode(), m.group(3)):
            raise ArtifactError(f"bad signature: the artifact was not signed with the key in {SIGNING_KEY_ENV}")
    try:
        zf = zipfile.ZipFile(_io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ArtifactError(f"not a valid zip archive ({exc})") from None
    names = [i.filename for i in zf.infolist()]
    if len(set(names)) != len(names):
        raise ArtifactError("duplicate member names in the archive")
    total = 0
    for info in zf.infolist():
        if not _MEMBER.match(info.filename):
            raise ArtifactError(f"unexpected member name {info.filename!r} (absolute, path traversal or unknown)")
        total += info.file_size
    if total > MAX_UNCOMPRESSED:
        raise ArtifactError("the archive expands to more than 4 GiB; refusing to load it")
    try:
        members = {n: zf.read(n) for n in names}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArtifactError(f"corrupted archive member ({exc})") from None
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except KeyError:
        raise ArtifactError("the archive has no manifest.json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError("manifest.json must hold an object")
    listed = manifest.get("members", {})
    if not isinstance(listed, dict) or set(listed) != set(members):
        raise ArtifactError("the members listed in the manifest differ from the archive's contents")
    for name, blob in members.items():
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), str(listed[name])):
            raise ArtifactError(f"checksum mismatch for member {name!r}")
    return manifest, members


provide("save", save)  # FittedPipeline.save
