"""The HTML reports opened in headless Chromium (Debian's ``chromium``, installed by .ci/run): every plot the page
holds rendered (the page's load script counts them into ``<body data-plots data-rendered>``, read back with
``--dump-dom``), a screenshot that is not blank and shows the bars, and a 1,000-column report that stays small."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from beamlearn.profile import profile
from beamlearn.profile.drift import drift
from beamlearn.profile.report import render_drift, render_profile, render_validation, write_html
from beamlearn.profile.validate import infer_schema, validate

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(tmp_path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile_dir = tmp_path / f"chrome-{len(list(tmp_path.glob('chrome-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", *extra, url], capture_output=True,
                          text=True, timeout=120, check=True)


def rendered(tmp_path, path) -> tuple[int, int]:
    dom = chromium(tmp_path, path.as_uri(), "--dump-dom").stdout
    m = re.search(r'<body data-plots="(\d+)" data-rendered="(\d+)"', dom)
    assert m, dom[:500]
    return int(m.group(1)), int(m.group(2))


def table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"x": rng.normal(0, 1, n), "y": rng.exponential(2, n), "z": rng.normal(0, 1, n) * 0.5,
                     "c": rng.choice(["red", "green", "blue"], n).tolist(), "flag": rng.random(n) < 0.2})


def test_profile_report_renders_every_plot(tmp_path) -> None:
    doc = profile(table(5_000, 0))
    path = tmp_path / "p"
    write_html(render_profile(doc), str(path))
    html = (path / "report.html").read_text()
    expected = html.count('<svg class="plot"') + html.count('<img class="plot"')
    assert expected == 5 + 1  # a plot per column, and the correlation heatmap
    assert rendered(tmp_path, path / "report.html") == (expected, expected)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, (path / "report.html").as_uri(), f"--screenshot={shot}", "--window-size=1100,1300")
    from matplotlib.image import imread

    img = imread(str(shot))[..., :3]
    assert img.shape[:2] == (1300, 1100)
    ink = (img < 0.9).any(axis=2).mean()
    bars = ((np.abs(img[..., 0] - 0x4C / 255) < 0.05) & (np.abs(img[..., 2] - 0xB0 / 255) < 0.05)).sum()
    heat = ((img[..., 0] > 0.5) & (img[..., 2] < 0.3)).sum()  # the heatmap's red diagonal
    assert ink > 0.03 and bars > 2_000 and heat > 500, (ink, bars, heat)


def test_a_thousand_columns_stay_small_and_render(tmp_path) -> None:
    rng = np.random.default_rng(1)
    cols = {f"n{i:04d}": rng.normal(i, 1, 300) for i in range(800)}
    cols.update({f"s{i:04d}": rng.choice(["a", "b", "c", "d"], 300).tolist() for i in range(200)})
    doc = profile(cols, correlations=30)
    path = tmp_path / "wide"
    write_html(render_profile(doc), str(path))
    size = (path / "report.html").stat().st_size
    assert size < 4 << 20, size
    assert rendered(tmp_path, path / "report.html") == (1001, 1001)


def test_validation_and_drift_reports_render(tmp_path) -> None:
    ref, cur = profile(table(3_000, 2)), profile(table(3_000, 3))
    write_html(render_drift(drift(ref, cur)), str(tmp_path / "d"))
    assert "<table>" in (tmp_path / "d" / "report.html").read_text()
    assert rendered(tmp_path, tmp_path / "d" / "report.html") == (5, 5)  # a plot per column
    bad = table(100, 4).set_column(3, "c", pa.array(["purple"] * 100))
    write_html(render_validation(validate(bad, infer_schema(ref)), "schema.yaml"), str(tmp_path / "v"))
    text = (tmp_path / "v" / "report.html").read_text()
    assert "out_of_domain" in text and "row 0 = purple" in text
