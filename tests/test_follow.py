"""``transform --follow``: local streaming of JSON lines (stdin, TCP, a watched folder), micro-batches, dead
letters, rolled outputs, clean stops, exactly-once across a SIGKILL, bounded memory."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.follow import FolderSource, StreamSource, TcpSource, follow
from beamlearn.follow_sinks import STATE_FILE, DeadLetterFile, FileOutputs, RolledFiles, StreamSink

WAIT = 60.0  # generous bound for anything that should take well under a second


def line(i: int, x: float | None = None, c: str = "a") -> str:
    return json.dumps({"id": i, "x": float(i % 7) if x is None else x, "c": c}) + "\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("model") / "m.blm")
    pipe = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"], handle_unknown="ignore")])
    pipe.fit({"id": list(range(8)), "x": [float(i) for i in range(8)], "c": list("abcdabcd")}).save(path)
    return path


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left():
    yield
    while _STARTED:  # a failed test leaves no follower running
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "beamlearn.cli", *args], env=env, **kw)
    _STARTED.append(proc)
    return proc


def jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(x) for x in fh]


def load_json(path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def readline(stream) -> bytes:
    """A line from ``stream``, failing (not hanging) if none comes within WAIT seconds."""
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(WAIT)
    assert got, "no output line within the wait bound"
    return got[0]


def wait_for(cond, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > WAIT:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_stdin_pipe_transforms_every_line(model, tmp_path):
    data = "".join(line(i) for i in range(5000)).encode()
    proc = subprocess.run([sys.executable, "-m", "beamlearn.cli", "transform", model, "--follow", "--batch-size",
                           "700"], input=data, capture_output=True, timeout=WAIT, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert [r["id"] for r in rows] == list(range(5000))
    want = bl.load(model).transform({"id": list(range(5000)), "x": [float(i % 7) for i in range(5000)],
                                     "c": ["a"] * 5000})
    assert [r["x"] for r in rows] == pytest.approx(want.column("x").to_pylist())
    assert rows[0]["c_a"] == 1 and rows[0]["c_b"] == 0
    assert "5,000 rows read, 5,000 written, 0 dead letters" in proc.stderr.decode()


def test_dead_letters_name_source_line_and_column(model, tmp_path):
    text = (line(0) + "not json\n" + '{"id": 2, "x": "oops", "c": "a"}\n' + '{"id": 3, "c": "b"}\n' + "\n"
            + '{"id": 5, "x": null, "c": "a"}\n' + "[1, 2]\n" + line(7))
    out, dead_path = io.BytesIO(), str(tmp_path / "dead.jsonl")
    stats = follow(bl.load(model), StreamSource(io.BytesIO(text.encode()), name="feed"), StreamSink(out),
                   dead=DeadLetterFile(dead_path))
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["id"] for r in got] == [0, 5, 7]  # null is a missing value; the blank line is skipped
    dead = {r["line"]: r for r in jsonl(dead_path)}
    assert sorted(dead) == [2, 3, 4, 7]
    assert all(r["source"] == "feed" for r in dead.values())
    assert "invalid JSON" in dead[2]["reason"] and dead[2]["record"] == {"_raw": "not json\n"}
    assert dead[3]["column"] == "x" and "oops" in dead[3]["reason"]
    assert dead[3]["record"] == {"id": 2, "x": "oops", "c": "a"}  # as it was sent
    assert dead[4]["column"] == "x" and "missing" in dead[4]["reason"] and dead[4]["record"] == {"id": 3, "c": "b"}
    assert (stats.rows_in, stats.rows_out, stats.dead_letters) == (7, 3, 4)


def test_trickle_flushes_on_max_wait_and_sigint_flushes_and_exits_0(model, tmp_path):
    proc = cli("transform", model, "--follow", "--batch-size", "100000", "--max-wait-ms", "20",
               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(line(1).encode())
    proc.stdin.flush()
    first = readline(proc.stdout)  # arrives long before the batch fills: flushed on max-wait
    assert json.loads(first)["id"] == 1
    proc.stdin.write((line(2) + line(3)).encode())
    proc.stdin.flush()
    assert [json.loads(readline(proc.stdout))["id"] for _ in range(2)] == [2, 3]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    assert out == b""
    assert "3 rows read, 3 written, 0 dead letters" in err.decode()


def test_tcp_listener_connections_and_sigterm(model, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = cli("transform", model, "--follow", "--listen", "127.0.0.1:0", "--out", str(out),
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert first.startswith("listening on 127.0.0.1:"), first
    port = int(first.strip().rsplit(":", 1)[1])
    for k in range(2):  # two connections, one after the other, the last line without a newline
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall("".join(line(100 * k + i) for i in range(50)).encode() + line(100 * k + 50).strip().encode())
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 102, "the rows of both connections")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    ids = sorted(json.loads(x)["id"] for x in out.read_text().splitlines())
    assert ids == list(range(51)) + list(range(100, 151))
    assert "102 rows read, 102 written" in err


def test_tcp_source_in_process(model):
    src, buf, stop = TcpSource("127.0.0.1", 0), io.BytesIO(), threading.Event()

    class Counting(StreamSink):
        rows = 0

        def write(self, batch):
            Counting.rows += batch.num_rows
            super().write(batch)

    th = threading.Thread(target=follow, args=(bl.load(model), src, Counting(buf)), kwargs={"stop": stop})
    th.start()
    with socket.create_connection(src.address) as s:
        s.sendall("".join(line(i) for i in range(10)).encode())
    wait_for(lambda: Counting.rows == 10, "10 rows")
    stop.set()
    th.join(WAIT)
    assert sorted(json.loads(x)["id"] for x in buf.getvalue().splitlines()) == list(range(10))


def test_parquet_rolled_by_rows_without_temp_files(model, tmp_path):
    data = "".join(line(i) for i in range(2500)).encode()
    outdir = tmp_path / "out"
    stats = follow(bl.load(model), StreamSource(io.BytesIO(data)), RolledFiles(str(outdir), roll_rows=1000),
                   batch_size=250)
    files = sorted(os.listdir(outdir))
    assert all(f.endswith(".parquet") and not f.startswith(".") for f in files), files
    assert [pq.ParquetFile(outdir / f).metadata.num_rows for f in files] == [1000, 1000, 500]
    table = pa.concat_tables(pq.read_table(outdir / f) for f in files)
    assert table.column("id").to_pylist() == list(range(2500)) and stats.rows_out == 2500
    assert "c_a" in table.column_names


def test_folder_once_exactly_once_in_process(model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(line(i) for i in range(30)) + "bad\n")
    import gzip
    with gzip.open(src / "b.jsonl.gz", "wt") as fh:
        fh.write("".join(line(i) for i in range(30, 60)))
    (src / ".c.jsonl").write_text(line(99))  # hidden: still being written
    run = lambda: follow(bl.load(model), FolderSource(str(src), settle_seconds=0, once=True),
                         FileOutputs(str(out), "jsonl"), dead=DeadLetterFile(str(out / "_dead.jsonl")))
    stats = run()
    assert (stats.files, stats.rows_out, stats.dead_letters) == (2, 60, 1)
    assert sorted(os.listdir(out)) == ["_dead.jsonl", STATE_FILE, "a-00000.jsonl", "b-00000.jsonl"]
    assert run().files == 0  # done files are never read again
    assert len(jsonl(out / "_dead.jsonl")) == 1


def _outputs(outdir) -> tuple[list[int], list[int]]:
    state = load_json(outdir / STATE_FILE)
    ids = []
    for d in state["done"].values():
        for f in d["outputs"]:
            ids += pq.read_table(outdir / f).column("id").to_pylist()
    dead = jsonl(outdir / "_dead_letters.jsonl")
    return ids, dead


def test_watch_folder_kill_and_restart_exactly_once(model, tmp_path):
    src, outdir = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    n_files, per_file, total = 12, 3000, 0
    for k in range(n_files):
        lines = [line(k * per_file + i) for i in range(per_file)]
        lines[7] = "{broken\n"  # one dead letter per file (its id is lost with it)
        (src / f".f{k:02d}.tmp").write_text("".join(lines))
        os.rename(src / f".f{k:02d}.tmp", src / f"f{k:02d}.jsonl")  # complete files, renamed into place
        total += per_file
    args = ("transform", model, "--follow", "--watch", str(src), "--out", str(outdir), "--batch-size", "200",
            "--roll-rows", "1000", "--settle-seconds", "0", "--quiet")
    state = outdir / STATE_FILE

    def done() -> int:
        try:
            return len(load_json(state)["done"])
        except (OSError, ValueError):
            return 0

    def partial() -> bool:  # a file's first outputs are in place, the file is not done yet
        try:
            finished = set(load_json(state)["done"])
        except (OSError, ValueError):
            return False
        return any(f.endswith("-00000.parquet") and f[:3] + ".jsonl" not in finished for f in os.listdir(outdir))

    proc = cli(*args, stderr=subprocess.PIPE)
    wait_for(lambda: (done() >= 2 and partial()) or done() == n_files, "a file half done")
    proc.kill()  # SIGKILL, mid-file: no flush, no cleanup
    proc.wait(WAIT)
    assert done() < n_files, "the run finished before it could be killed; make the files larger"
    proc = cli(*args, stderr=subprocess.PIPE)
    wait_for(lambda: done() == n_files, "every file done after the restart")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    ids, dead = _outputs(outdir)
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert len(ids) + len(dead) == total, (len(ids), len(dead), total)
    assert {(d["source"], d["line"]) for d in dead} == {(f"f{k:02d}.jsonl", 8) for k in range(n_files)}
    assert set(ids) == {k * per_file + i for k in range(n_files) for i in range(per_file) if i != 7}
    assert not [f for f in os.listdir(outdir) if f.startswith(".")], "temporary files left"


def test_memory_stays_flat_over_two_million_records(model, tmp_path):
    block = "".join(line(i, c="abcd"[i % 4]) for i in range(20_000)).encode()  # ~0.8 MB
    proc = cli("transform", model, "--follow", "--quiet", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def rss() -> int:
        with open(f"/proc/{proc.pid}/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmRSS")) * 1024

    samples = []
    for k in range(100):  # 2,000,000 records
        proc.stdin.write(block)
        if k % 10 == 9:
            samples.append(rss())
    proc.stdin.close()
    assert proc.wait(WAIT) == 0
    warm = samples[1]
    assert max(samples) - warm < 64 * 2**20, [s // 2**20 for s in samples]


def test_follow_usage_errors(model, capsys):
    for argv, fragment in ((["--follow", "--data", "x.csv"], "give no --data"),
                           (["--follow", "--listen", "nope"], "HOST:PORT"),
                           (["--follow", "--listen", "127.0.0.1:0", "--watch", "."], "exclude each other"),
                           (["--follow", "--watch", ".", "--out", "x.jsonl"], "needs --out DIR"),
                           (["--follow", "--format", "parquet"], "folder"),
                           (["--max-wait-ms", "5", "--data", "x.csv", "--out", "y.csv"], "--max-wait-ms needs --follow"),
                           ([], "needs --data")):
        code = main(["transform", model, *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and fragment in err[0], (argv, err)


def test_a_value_a_step_rejects_is_a_dead_letter_with_its_line(capsys):
    fitted = bl.Pipeline([bl.OneHotEncoder(["c"], handle_unknown="error")]).fit({"c": ["a", "b"]})
    out, memo = io.BytesIO(), DeadLetterFile(None)
    data = b'{"c": "a"}\n{"c": "zzz"}\n{"c": "b"}\n'
    stats = follow(fitted, StreamSource(io.BytesIO(data), name="s"), StreamSink(out), dead=memo)
    assert [json.loads(x) for x in out.getvalue().splitlines()] == [{"c_a": 1, "c_b": 0}, {"c_a": 0, "c_b": 1}]
    assert (stats.rows_in, stats.rows_out, stats.dead_letters) == (3, 2, 1)
    warning = capsys.readouterr().err.strip()  # no --errors: one warning line per dead letter on stderr
    assert warning.startswith("beamlearn: warning: dead letter: ")
    rec = json.loads(warning.split(": ", 3)[3])
    assert (rec["source"], rec["line"], rec["column"], rec["record"]) == ("s", 2, "c", {"c": "zzz"})


def test_jsonl_bytes_reads_back_as_the_rows():
    from beamlearn.textio import jsonl_bytes

    batch = pa.record_batch({
        "onehot": pa.array([0, 1, 0, 1], pa.uint8()), "digit": pa.array([9, 0, 3, 3], pa.int64()),
        "big": pa.array([0, 10, 255, 1], pa.uint8()), "null_digit": pa.array([1, None, 0, 1], pa.uint8()),
        "neg": pa.array([-1, 0, 1, 2], pa.int8()), "f": [0.1, float("nan"), float("-inf"), 1e-300],
        "s": ['q"uote', "back\\slash", "new\nline\t\x01", None], "b": [True, False, None, True],
        "l": [[1.5], None, [], [2.0, 3.0]], "last": pa.array([1, 0, 0, 1], pa.uint8())})
    got = [json.loads(x) for x in jsonl_bytes(batch).splitlines()]
    want = batch.to_pylist()
    for r in want:
        r["f"] = r["f"] if r["f"] == r["f"] and abs(r["f"]) != float("inf") else None
    assert got == want
    assert list(got[0]) == batch.schema.names
