"""beamlearn on Apache Beam: the public names of the Beam engine.

Compose them in any Beam pipeline (any runner but Dask; see :func:`check_runner`)::

    import apache_beam as beam
    import beamlearn as bl
    from beamlearn import beam as blb

    with beam.Pipeline(options=...) as p:
        splits = p | blb.FileSplits("data/*.parquet")   # read where consumed: by every pass, then the transform
        fitted = splits | blb.Fit(bl.Pipeline([bl.SimpleImputer(num), bl.StandardScaler(num)]))
        out, errors = splits | blb.Transform(fitted).with_errors()   # fit then transform, one job
        out | blb.WriteFiles("out/features.parquet", schema=...)

``Fit`` and ``Transform`` also take PCollections of RecordBatches (``blb.ReadFiles(...)``, or your own) or of
dict rows.

:class:`ModelHandler` serves an artifact to Beam's ``RunInference``; :class:`Drift` compares rows (per window when
windowed) with a model's training profile.

:func:`run_fit`, :func:`run_transform` and :func:`run_evaluate` run whole jobs over files (the CLI's ``--engine beam``).

Examples
--------
>>> from beamlearn import beam as blb
>>> sorted(n for n in blb.__all__ if n[0].isupper())[:4]
['AnalyzerCombineFn', 'Drift', 'Evaluate', 'FileSplit']
"""

from beamlearn.engines.beam import Fit, Transform, Unbatch, load_artifact, unbatch
from beamlearn.engines.beam_checks import check_runner
from beamlearn.engines.beam_drift import Drift
from beamlearn.engines.beam_eval import AnalyzerCombineFn, Evaluate, run_evaluate
from beamlearn.engines.beam_io import (
           FileSplit,
           FileSplits,
           ReadCsv,
           ReadFiles,
           ReadJsonl,
           ReadParquet,
           WriteFiles,
)
from beamlearn.engines.beam_jobs import portable_services, run_fit, run_transform
from beamlearn.engines.beam_stream import TransformLatest, WatchArtifacts, WindowedFit, version_key
from beamlearn.engines.passes import pass_bound
from beamlearn.interop.beam import ModelHandler

__all__ = ["Fit", "Transform", "Unbatch", "unbatch", "FileSplits", "FileSplit", "ReadFiles", "ReadCsv", "ReadParquet", "ReadJsonl",  # noqa: RUF022
           "WriteFiles", "run_fit", "run_transform", "check_runner", "load_artifact", "pass_bound",
           "portable_services", "Evaluate", "AnalyzerCombineFn", "run_evaluate", "TransformLatest", "WatchArtifacts",
           "WindowedFit", "version_key", "ModelHandler", "Drift"]
