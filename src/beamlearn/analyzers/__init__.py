"""Mergeable reductions: the full-pass statistics every fit is made of.

Each analyzer follows Beam's ``CombineFn`` contract, so one implementation serves every engine::

    acc   = analyzer.create()
    acc   = analyzer.add(acc, batch)          # per batch, any order, any partition
    acc   = analyzer.merge([acc1, acc2, ...]) # associative and commutative
    state = analyzer.extract(acc)             # plain data: numbers, strings, lists, numpy arrays
    nxt   = analyzer.then(state)              # another analyzer for a further pass, or None

Accumulators pickle (Beam moves them between workers).  Counts, extrema and vocabularies are identical under
any split of the data; floating sums and moments agree within a relative 1e-12, because float addition is not
associative and engines combine partial results in varying order.  Missing values (nulls and NaN) are never
part of a statistic; they are counted separately.

Quantiles are exact by default: a first pass with a KLL sketch brackets each wanted order statistic, a second
pass collects the values inside the bracket and selects exactly, reproducing :func:`numpy.quantile` for the
chosen ``method``.  ``approx=True`` answers from the sketch alone, within its rank error, non-deterministically
(KLL is randomized).

Examples
--------
>>> import pyarrow as pa
>>> m = Moments(["x"])
>>> acc = m.merge([m.add(m.create(), pa.record_batch({"x": [1.0, 2.0]})),
...                m.add(m.create(), pa.record_batch({"x": [3.0, None]}))])
>>> state = m.extract(acc)
>>> state["count"].tolist(), state["mean"].tolist(), state["var"].tolist()
([3.0], [2.0], [0.6666666666666666])
"""

from __future__ import annotations

from beamlearn.analyzers.base import Analyzer, Constant, batch_weights, freeze, run_analyzer
from beamlearn.analyzers.counts import RowCount, ValueCounts, distinct_counts
from beamlearn.analyzers.moments import CoMoments, GroupedMoments, MinMax, Moments
from beamlearn.analyzers.quantiles import (
                                           ALPHA_BETA,
                                           QUANTILE_METHODS,
                                           KllSketch,
                                           Quantiles,
                                           QuantileSelect,
                                           lerp,
                                           quantile_plan,
)

__all__ = ["Analyzer", "Constant", "RowCount", "Moments", "MinMax", "ValueCounts", "Quantiles", "run_analyzer",
           "quantile_plan", "CoMoments", "GroupedMoments", "KllSketch", "QuantileSelect", "QUANTILE_METHODS",
           "ALPHA_BETA", "batch_weights", "distinct_counts", "freeze", "lerp"]
