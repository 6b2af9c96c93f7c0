"""Data understanding and monitoring: profiles, schema inference and validation, drift - analyzers again.

A profile is one pass of one mergeable analyzer (:class:`~beamlearn.analyzers.profile.ColumnProfile`), so it runs
on every engine that fits a pipeline (:func:`profile`, ``engine="local" | "beam"``), and two profiles merge into
the profile of the union of their data (:func:`merge_profiles`).

``profile.json`` (format ``beamlearn.profile``, version 1)::

    {"format": "beamlearn.profile", "version": 1, "created": ISO time, "engine": "local",
     "params": {"k": 200, "lg_max_map_size": 8, "correlations": 50, "distinct": true, "lengths": true},
     "rows": int,                                   # rows read
     "columns": {NAME: {
        "type": Arrow type, "kind": "numeric" | "string" | "boolean" | "temporal" | "other",
        "count": int (non-missing values), "nulls": int, "nan": int (NaN of float columns, not nulls),
        "distinct": {"estimate", "lower", "upper"}, "hll": base64 (zlib) HyperLogLog registers,   # not "other"
        # numeric:
        "min", "max", "mean", "std" (sample, ddof=1), "moments": [n, mean, M2] (exact, mergeable),
        "quantiles": {"0.01": .., "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"} (KLL),
        "histogram": {"edges": [21 floats], "counts": [20 floats]} (KLL PMF), "kll": base64 (DataSketches),
        # string and boolean:
        "top": [[value, count], ...] (10 most frequent),
        "frequent": {"total", "max_error", "sketch": base64 (DataSketches frequent_strings_sketch)},
        # string:
        "length": {"min", "max", "mean", "moments": [n, mean, M2]}}},
     "correlations": {"columns": [...], "rows": complete rows, "skipped": int, "pearson": [[...]],
                      "state": {"count", "mean", "comoment"}} | null}

Missing figures are ``null``.  Sketches are DataSketches' own serialized bytes (KLL: normalized rank error
``kll_doubles_sketch.get_normalized_rank_error(k, False)``, 1.33% at k=200; frequent items: exact counts while a
column has fewer than ``0.75 * 2**lg_max_map_size`` distinct values); distinct counts are a HyperLogLog of 4,096
registers (relative standard error 1.6%).  Every fitted model keeps a compact profile of its training input
(``COMPACT_PROFILE``: KLL and frequent items), which :func:`read_profile` reads as a reference for drift.
"""

from __future__ import annotations

from beamlearn.profile.core import (
    ENGINES,
    PROFILE_FORMAT,
    PROFILE_VERSION,
    Profiler,
    merge_profiles,
    profile,
    profile_fields,
    profile_windows,
    read_profile,
    training_profile,
    write_profile,
)

__all__ = ["ENGINES", "PROFILE_FORMAT", "PROFILE_VERSION", "Profiler", "merge_profiles", "profile",
           "profile_fields", "profile_windows", "read_profile", "training_profile",
           "write_profile"]
