"""Drift from sketches: figures against scipy/numpy on the raw data (exact for categorical columns, within the
KLL rank error for numeric ones), Evidently's default decisions, and the CLI against a profile or a model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketches import kll_doubles_sketch
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, ks_2samp, wasserstein_distance

import beamlearn as bl
from beamlearn.cli import main
from beamlearn.profile import profile
from beamlearn.profile.core import training_profile
from beamlearn.profile.drift import drift

EPS = kll_doubles_sketch.get_normalized_rank_error(200, False)


@pytest.mark.parametrize("shift", [0.0, 0.03, 0.5])
def test_numeric_figures_match_scipy(shift) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40_000), rng.normal(shift, 1.0, 25_000)
    r = drift(profile({"x": a}), profile({"x": b}))["columns"]["x"]
    assert abs(r["ks"] - ks_2samp(a, b).statistic) <= 2 * EPS
    w = wasserstein_distance(a, b)
    # |W1 error| <= sum over both sketches of the integral of the quantile error, <= 2 eps x the range (~8 sd)
    assert abs(r["wasserstein"] - w) <= 2 * EPS * 8 * a.std()
    assert abs(r["wasserstein_normed"] - w / a.std()) <= 2 * EPS * 8
    cuts = np.quantile(a, np.arange(1, 10) / 10)  # PSI and JS: on the reference's deciles
    sa, sb = (np.diff(np.concatenate([[0], [(v < c).mean() for c in cuts], [1]])) for v in (a, b))
    psi = np.sum((sa - sb) * np.log(sa / sb))
    assert abs(r["psi"] - psi) <= 0.01 + 0.15 * psi
    assert abs(r["js"] - jensenshannon(sa, sb)) <= 0.02
    assert r["method"] == "wasserstein" and r["threshold"] == 0.1
    assert r["drift"] == (shift == 0.5)


def test_small_reference_uses_ks_like_evidently() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 500), rng.normal(0.5, 1, 500)
    r = drift(profile({"x": a}), profile({"x": b}))["columns"]["x"]
    exact = ks_2samp(a, b, method="asymp")
    assert r["method"] == "ks" and abs(r["ks"] - exact.statistic) <= 2 * EPS
    assert exact.pvalue < 1e-4 and r["ks_pvalue"] < 1e-3
    assert r["drift"] and r["value"] < 0.05


def test_categorical_figures_are_exact() -> None:
    rng = np.random.default_rng(3)
    a = rng.choice(list("abcd"), 5_000, p=[0.4, 0.3, 0.2, 0.1])
    b = rng.choice(list("abcde"), 4_000, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    r = drift(profile({"c": a.tolist()}), profile({"c": b.tolist()}))["columns"]["c"]
    keys = list("abcde")
    ra = np.array([(a == k).mean() for k in keys])
    rb = np.array([(b == k).mean() for k in keys])
    assert r["linf"] == pytest.approx(np.abs(ra - rb).max(), rel=1e-12)
    sa, sb = np.where(ra == 0, 1e-4, ra), np.where(rb == 0, 1e-4, rb)
    assert r["psi"] == pytest.approx(np.sum((sa - sb) * np.log(sa / sb)), rel=1e-12)
    assert r["js"] == pytest.approx(jensenshannon(sa, sb), rel=1e-9)
    counts_b = np.array([(b == k).sum() for k in keys])
    assert r["chi2_pvalue"] == pytest.approx(chisquare(counts_b, sa / sa.sum() * len(b)).pvalue, rel=1e-9, abs=1e-300)
    assert r["method"] == "js" and r["drift"] == (r["js"] >= 0.1)


def test_same_distribution_does_not_drift_and_methods_and_thresholds() -> None:
    rng = np.random.default_rng(4)
    ref = profile({"x": rng.normal(size=20_000), "c": rng.choice(list("ab"), 20_000).tolist()})
    cur = profile({"x": rng.normal(size=20_000), "c": rng.choice(list("ab"), 20_000).tolist()})
    r = drift(ref, cur)
    assert not r["drift"] and r["compared"] == 2 and r["share"] == 0
    assert drift(ref, cur, method="psi", threshold=1e-9)["drift"]
    assert drift(ref, cur, method="linf")["columns"]["x"]["reason"].startswith("linf does not apply")
    with pytest.raises(bl.errors.SpecError):
        drift(ref, cur, method="nope")


def test_a_model_trained_on_small_data_does_not_false_alarm() -> None:
    """The sketched normed Wasserstein distance of unshifted data is noise; a fit's compact profile samples its
    batches, and too small a sample put that noise at the 0.1 threshold (a floor of 1,024 values a batch: a mean
    of 0.040 over seeds for 20,000 training rows, a maximum of 0.074).  The floor of 4,096 gives about 0.022."""
    figures = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        fitted = bl.Pipeline([bl.StandardScaler(["x"])]).fit({"x": rng.normal(3, 2, 20_000)})
        reference = training_profile(fitted)
        r = drift(reference, profile({"x": rng.normal(3, 2, 20_000)}))["columns"]["x"]
        assert r["method"] == "wasserstein" and not r["drift"]
        figures.append(r["wasserstein_normed"])
    assert np.mean(figures) < 0.03 and max(figures) < 0.07


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("drift")
    rng = np.random.default_rng(5)

    def table(n, mu, p):
        return pa.table({"x": rng.normal(mu, 1, n), "c": rng.choice(list("abc"), n, p=p).tolist(),
                         "y": rng.normal(size=n)})

    pq.write_table(table(20_000, 0, [0.5, 0.3, 0.2]), d / "train.parquet")  # one batch: the compact profile samples
    pq.write_table(table(20_000, 0, [0.5, 0.3, 0.2]), d / "same.parquet")
    pq.write_table(pa.concat_tables([table(5_000, 0, [0.5, 0.3, 0.2]), table(5_000, 1.5, [0.1, 0.1, 0.8])]),
                   d / "shifted.parquet")
    fitted = bl.Pipeline([bl.StandardScaler(["x"]), bl.OneHotEncoder(["c"])]).fit(str(d / "train.parquet"))
    fitted.save(str(d / "model.blm"))
    return d


def test_cli_against_a_model_artifact_and_a_profile(files, capsys) -> None:
    d = files
    assert main(["drift", str(d / "model.blm"), "--data", str(d / "same.parquet")]) == 0
    assert main(["drift", str(d / "model.blm"), "--data", str(d / "shifted.parquet"), "--report",
                 str(d / "rep")]) == 1
    out = capsys.readouterr().out
    assert "x: wasserstein" in out and "c: js" in out and "y:" not in out
    saved = json.loads((d / "rep" / "drift.json").read_text())
    assert set(saved["drifted"]) == {"x", "c"}
    assert "<table>" in (d / "rep" / "report.html").read_text()
    assert main(["profile", str(d / "train.parquet"), "--report", str(d / "prof")]) == 0
    assert main(["drift", str(d / "prof" / "profile.json"), "--data", str(d / "same.parquet")]) == 0


def test_cli_windows(files, capsys) -> None:
    d = files
    capsys.readouterr()
    assert main(["drift", str(d / "model.blm"), "--data", str(d / "shifted.parquet"), "--by", "5000", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert [w["window"] for w in result["windows"]] == [0, 5000]
    assert [w["drift"] for w in result["windows"]] == [False, True]


def test_cli_mistakes(files, capsys) -> None:
    d = files
    assert main(["drift", str(d / "nope.json"), "--data", str(d / "same.parquet")]) == 2
    assert main(["drift", str(d / "same.parquet"), "--data", str(d / "same.parquet")]) == 2
    assert main(["drift", str(d / "model.blm"), "--data", str(d / "same.parquet"), "--method", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("beamlearn: error:") == 3 and "Traceback" not in err
