"""Reports: metrics.json round-trips the schema, report.html is well-formed, offline, and every image decodes."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from beamlearn.metrics import evaluate

VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Checks that tags nest properly and collects images and external references."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[tuple[str, str]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("alt", ""), a["src"]))
        for k in ("src", "href"):
            if a.get(k) and not a[k].startswith("data:"):
                self.external.append(a[k])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def check_html(text: str) -> list[tuple[str, np.ndarray]]:
    assert text.startswith("<!DOCTYPE html>")
    p = _Checker()
    p.feed(text)
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    assert p.external == [] and not re.search(r"https?://", text)
    decoded = []
    for alt, src in p.images:
        assert src.startswith("data:image/png;base64,")
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(io.BytesIO(raw), format="png")
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        decoded.append((alt, img))
    return decoded


@pytest.fixture(scope="module")
def binary_result():
    rng = np.random.default_rng(0)
    n = 800
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    data = {"y": y, "p": (s > 0.5).astype(int), "s": s, "origin": rng.choice(["JFK", "LGA", "EWR"], n, p=[.5, .47, .03]),
            "carrier": rng.choice(["AA", "B6", "UA"], n)}
    return evaluate(data, label="y", prediction="p", score="s", slices=["origin", "carrier"], n_bootstrap=20,
                    require=["f1>=0.5", "slice[origin=EWR].accuracy>=0.5", "roc_auc>=0.99"])


def test_classification_report(tmp_path, binary_result):
    paths = binary_result.write_report(str(tmp_path / "rep"))
    m = json.loads(Path(paths["json"]).read_text())
    assert m["schema_version"] == 1 and m["task"] == "classification"
    assert m["overall"]["accuracy"] == binary_result.metrics["overall"]["accuracy"]
    assert [g["passed"] for g in m["gates"]] == [True, False, False]
    assert m["slices"]["origin=EWR"]["insufficient"] is True
    text = Path(paths["html"]).read_text(encoding="utf-8")
    alts = [a for a, _ in check_html(text)]
    assert alts[:4] == ["confusion matrix", "ROC curve", "precision-recall curve", "calibration"]
    assert sum(a.startswith("accuracy per slice") for a in alts) == 2
    assert "insufficient data" in text and "FAIL" in text and "PASS" in text
    assert not list((tmp_path / "rep").glob(".tmp-*"))


def test_regression_report_has_residual_histogram(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=500)
    r = evaluate({"y": y, "p": y + rng.normal(size=500), "g": rng.choice(["a", "b"], 500)}, label="y",
                 prediction="p", slices="g", require=["r2>=0.9"])
    paths = r.write_report(str(tmp_path))
    alts = [a for a, _ in check_html(Path(paths["html"]).read_text(encoding="utf-8"))]
    assert "residual histogram" in alts and "mae per slice of g" in alts
    m = json.loads(Path(paths["json"]).read_text())
    assert sum(m["overall"]["residual_histogram"]["counts"]) == pytest.approx(500)
    assert m["gates"][0]["passed"] is False


def test_nan_is_written_as_null(tmp_path):
    r = evaluate({"y": [1, 1], "p": [1, 0], "s": [0.9, 0.2]}, label="y", prediction="p", score="s")
    m = json.loads(r.to_json())
    assert m["overall"]["roc_auc"] is None  # one class: undefined
