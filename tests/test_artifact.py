"""Artifacts: round trip, and every way a file can be damaged or forged is refused with ArtifactError.

Forged files are rebuilt with correct outer checksums, so what rejects them is the inner checks."""

from __future__ import annotations

import hashlib
import hmac
import io as _io
import json
import zipfile

import numpy as np
import pyarrow as pa
import pytest

import beamlearn as bl
from beamlearn import artifact
from beamlearn.errors import ArtifactError


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    t = pa.table({"a": rng.normal(size=40), "b": pa.array(rng.normal(size=40), mask=np.arange(40) % 6 == 0),
                  "id": [f"r{i}" for i in range(40)]})
    return bl.Pipeline([bl.StandardScaler(["a", "b"], with_mean=False)], name="demo").fit(t), t


def unpack(data: bytes) -> tuple[dict, list[tuple[str, bytes]]]:
    zf = zipfile.ZipFile(_io.BytesIO(data))
    members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    manifest = json.loads(dict(members)["manifest.json"])
    return manifest, [(n, b) for n, b in members if n != "manifest.json"]


def forge(manifest: dict, members: list[tuple[str, bytes]], *, key: bytes | None = None,
          relist: bool = True) -> bytes:
    """A zip with the given manifest and members and a correct trailer (checksum, and signature with key)."""
    if relist:
        manifest = dict(manifest, members={n: hashlib.sha256(b).hexdigest() for n, b in members})
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for n, b in members:
            zf.writestr(n, b)
    head = buf.getvalue()[:-2]
    mac = hmac.new(key, head, hashlib.sha256).hexdigest().encode() if key else b"-" * 64
    trailer = b"beamlearn:1:sha256=%s:hmac=%s" % (hashlib.sha256(head).hexdigest().encode(), mac)
    return head + len(trailer).to_bytes(2, "little") + trailer


def load_bytes(tmp_path, data: bytes):
    p = tmp_path / "m.blm"
    p.write_bytes(data)
    return bl.load(str(p))


# ---------------------------------------------------------------------------------------------- round trip
def test_round_trip_identical_outputs_and_lineage(fitted, tmp_path):
    f, t = fitted
    path = f.save(str(tmp_path / "model.blm"))
    g = bl.load(path)
    assert g.transform(t).equals(f.transform(t))
    for row in t.to_pylist()[:5]:
        assert g.transform_one(row) == f.transform_one(row)
    assert g.input_schema == f.input_schema and g.output_schema == f.output_schema
    assert g.required_columns == f.required_columns and g.name == "demo"
    assert [s.get_params() for s in g.steps] == [s.get_params() for s in f.steps]
    assert set(g.lineage) == set(f.lineage) | {"versions"}
    for k in f.lineage:
        if k != "profile":
            assert g.lineage[k] == f.lineage[k], k
    np.testing.assert_array_equal(g.lineage["profile"]["moments"]["mean"], f.lineage["profile"]["moments"]["mean"])
    assert g.lineage["versions"]["numpy"] == np.__version__
    h = bl.load(g.save(str(tmp_path / "again.blm")))  # re-saving keeps the original versions and lineage
    assert h.lineage["versions"] == g.lineage["versions"] and h.transform(t).equals(f.transform(t))


def test_save_is_atomic_and_leaves_no_temp_files(fitted, tmp_path):
    f, _ = fitted
    f.save(str(tmp_path / "m.blm"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.blm"]


def test_arrays_are_npy_without_pickle(fitted, tmp_path):
    f, _ = fitted
    _manifest, members = unpack(artifact.to_bytes(f))
    npys = [b for n, b in members if n.endswith(".npy")]
    assert npys
    for b in npys:
        np.load(_io.BytesIO(b), allow_pickle=False)  # never needs pickle


# ---------------------------------------------------------------------------------------------- damage
def test_flipped_byte_at_any_offset_is_rejected(fitted, tmp_path):
    f, _ = fitted
    data = artifact.to_bytes(f)
    n = len(data)
    offsets = sorted(set(range(0, n, max(1, n // 150))) | set(range(max(0, n - 260), n)) | set(range(64)))
    p = tmp_path / "m.blm"
    for off in offsets:
        for mask in (0x01, 0x20, 0xFF):
            bad = bytearray(data)
            bad[off] ^= mask
            p.write_bytes(bytes(bad))
            with pytest.raises(ArtifactError):
                bl.load(str(p))
                pytest.fail(f"flipped byte at offset {off} (mask {mask:#x}) of {n} was accepted")


def test_truncated_and_garbage_files(tmp_path, fitted):
    f, _ = fitted
    data = artifact.to_bytes(f)
    for bad in (b"", b"PK", data[:-1], data[: len(data) // 2], b"x" * 500):
        with pytest.raises(ArtifactError):
            load_bytes(tmp_path, bad)
    with pytest.raises(ArtifactError, match="cannot read"):
        bl.load(str(tmp_path / "absent.blm"))


# ---------------------------------------------------------------------------------------------- forged
def test_forge_helper_is_faithful(fitted, tmp_path):
    f, t = fitted
    manifest, members = unpack(artifact.to_bytes(f))
    assert load_bytes(tmp_path, forge(manifest, members)).transform(t).equals(f.transform(t))


def test_unknown_step_type(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    manifest["steps"][0]["type"] = "os.system"
    with pytest.raises(ArtifactError, match="unknown step type 'os.system'"):
        load_bytes(tmp_path, forge(manifest, members))


def test_unknown_parameter(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    manifest["steps"][0]["params"]["evil"] = 1
    with pytest.raises(ArtifactError, match="unknown parameters"):
        load_bytes(tmp_path, forge(manifest, members))


@pytest.mark.parametrize("version", [2, 99, 0, "1", None])
def test_unreadable_format_versions(fitted, tmp_path, version):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    manifest["format_version"] = version
    with pytest.raises(ArtifactError, match="format version"):
        load_bytes(tmp_path, forge(manifest, members))


def test_not_a_pipeline_artifact(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    manifest["format"] = "something.else"
    with pytest.raises(ArtifactError, match="not a beamlearn pipeline"):
        load_bytes(tmp_path, forge(manifest, members))


@pytest.mark.parametrize("name", ["../x", "/abs", "arrays/../../etc/passwd", "schema\\..\\x", "evil.py",
                                  "arrays/0.npy/../../x"])
def test_path_traversal_and_unknown_member_names(fitted, tmp_path, name):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    with pytest.raises(ArtifactError, match="member name"):
        load_bytes(tmp_path, forge(manifest, [*members, (name, b"payload")]))


def test_duplicate_member_names(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    dup = next(m for m in members if m[0].startswith("arrays/"))
    with pytest.warns(UserWarning):  # zipfile warns about the duplicate it is told to write
        data = forge(manifest, [*members, (dup[0], dup[1])])
    with pytest.raises(ArtifactError, match="duplicate"):
        load_bytes(tmp_path, data)


def test_member_missing_from_or_added_to_the_manifest_list(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    listed = {n: hashlib.sha256(b).hexdigest() for n, b in members}
    extra = dict(listed)
    del extra[members[0][0]]  # a member the manifest does not list
    with pytest.raises(ArtifactError, match="differ"):
        load_bytes(tmp_path, forge(dict(manifest, members=extra), members, relist=False))
    more = dict(listed, **{"arrays/99.npy": "0" * 64})  # a listed member the archive lacks
    with pytest.raises(ArtifactError, match="differ"):
        load_bytes(tmp_path, forge(dict(manifest, members=more), members, relist=False))
    with pytest.raises(ArtifactError):  # the archive lacks a member the manifest still refers to
        load_bytes(tmp_path, forge(manifest, [m for m in members if not m[0].startswith("arrays/")]))


def test_inner_member_checksum(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    listed = {n: hashlib.sha256(b).hexdigest() for n, b in members}
    changed = [(n, b + b"\0" if n.startswith("arrays/") else b) for n, b in members]
    with pytest.raises(ArtifactError, match="checksum mismatch for member"):
        load_bytes(tmp_path, forge(dict(manifest, members=listed), changed, relist=False))


def test_pickled_object_array_is_refused(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    buf = _io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    name = next(n for n, _ in members if n.startswith("arrays/"))
    members = [(n, buf.getvalue() if n == name else b) for n, b in members]
    with pytest.raises(ArtifactError):
        load_bytes(tmp_path, forge(manifest, members))


def test_garbage_schema_and_state_mismatch(fitted, tmp_path):
    manifest, members = unpack(artifact.to_bytes(fitted[0]))
    bad_schema = [(n, b"garbage" if n == "schema/input.arrow" else b) for n, b in members]
    with pytest.raises(ArtifactError):
        load_bytes(tmp_path, forge(manifest, bad_schema))
    manifest["steps"][0]["state"] = {}
    with pytest.raises(ArtifactError, match="do not match"):
        load_bytes(tmp_path, forge(manifest, members))


def test_manifest_not_json(fitted, tmp_path):
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", "{nope")
    head = buf.getvalue()[:-2]
    trailer = b"beamlearn:1:sha256=%s:hmac=%s" % (hashlib.sha256(head).hexdigest().encode(), b"-" * 64)
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_bytes(tmp_path, head + len(trailer).to_bytes(2, "little") + trailer)


# ---------------------------------------------------------------------------------------------- signing
def test_hmac_signing(fitted, tmp_path, monkeypatch):
    f, t = fitted
    unsigned = f.save(str(tmp_path / "unsigned.blm"))
    monkeypatch.setenv(artifact.SIGNING_KEY_ENV, "s3cret")
    signed = f.save(str(tmp_path / "signed.blm"))
    assert bl.load(signed).transform(t).equals(f.transform(t))
    with pytest.raises(ArtifactError, match="not signed"):
        bl.load(unsigned)
    manifest, members = unpack(tmp_path.joinpath("signed.blm").read_bytes())
    with pytest.raises(ArtifactError, match="bad signature"):
        load_bytes(tmp_path, forge(manifest, members, key=b"another key"))
    assert load_bytes(tmp_path, forge(manifest, members, key=b"s3cret")).transform(t).equals(f.transform(t))
    monkeypatch.setenv(artifact.SIGNING_KEY_ENV, "other")
    with pytest.raises(ArtifactError, match="bad signature"):
        bl.load(signed)
    monkeypatch.delenv(artifact.SIGNING_KEY_ENV)
    assert bl.load(signed).transform(t).equals(f.transform(t))  # checksums still verified without a key


def test_state_codec_round_trip():
    members: dict[str, bytes] = {}
    state = {"a": np.arange(3, dtype=np.int64), "f": [1.5, float("nan"), float("inf")], "s": ["x", None],
             "b": np.array([True, False]), "n": {"k": np.float64(2.5)}, "u": np.array(["p", "q"])}
    enc = artifact.encode_state(state, members)
    json.dumps(enc, allow_nan=False)
    dec = artifact.decode_state(json.loads(json.dumps(enc)), members)
    np.testing.assert_array_equal(dec["a"], state["a"])
    assert dec["f"][0] == 1.5 and np.isnan(dec["f"][1]) and dec["f"][2] == np.inf
    assert dec["s"] == ["x", None] and dec["n"] == {"k": 2.5} and dec["u"].tolist() == ["p", "q"]
    with pytest.raises(bl.errors.BeamlearnError):
        artifact.encode_state({"x": object()}, {})
    with pytest.raises(ArtifactError):
        artifact.decode_state({"__float__": "__import__('os')"}, {})


def test_saved_accumulators_malformed_or_not_matching(tmp_path):
    t = pa.table({"x": [1.0, 2.0, None], "c": ["a", None, "b"]})
    blob = artifact.to_bytes(bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])]).fit(t))
    manifest, members = unpack(blob)
    assert [a["exact"] for a in manifest["accumulators"]] == [True, True]
    with pytest.raises(ArtifactError, match="do not match the steps"):
        load_bytes(tmp_path, forge(dict(manifest, accumulators=manifest["accumulators"][:1]), members))
    bad = json.loads(json.dumps(manifest))
    bad["accumulators"][1]["accumulators"]["vocabulary"] = [[1, 2]]
    with pytest.raises(ArtifactError, match="does not match its analyzer"):
        load_bytes(tmp_path, forge(bad, members)).update(t)
    bad["accumulators"][1] = {"exact": True}
    with pytest.raises(ArtifactError, match="malformed"):
        load_bytes(tmp_path, forge(bad, members)).update(t)
