"""A beamlearn artifact as a model of Apache Beam's ``RunInference``: :class:`ModelHandler`.

Beam users load an artifact the way they load a scikit-learn or ONNX model::

    from apache_beam.ml.inference.base import RunInference
    from beamlearn.beam import ModelHandler

    rows | RunInference(ModelHandler("gs://bucket/model.blm", max_batch_size=512))

Elements are dict rows (results are :class:`~apache_beam.ml.inference.base.PredictionResult` with the row as
``example`` and the transformed row as ``inference``) or ``pyarrow.RecordBatch``\\ es (each transformed as a whole:
the result is the transformed RecordBatch).  ``RunInference`` groups rows with ``BatchElements`` (``min_batch_size``,
``max_batch_size``, ``max_batch_duration_secs``), and the handler transforms each group vectorized, exactly as
:meth:`~beamlearn.FittedPipeline.transform` does.  ``update_model_path`` lets ``RunInference(...,
model_metadata_pcoll=WatchFilePattern(...))`` swap in a new artifact; ``share_model_across_processes=True`` (or
``large_model``/``model_copies``) keeps one copy per machine through Beam's multi-process shared handle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from apache_beam.ml.inference import base

from beamlearn.engines.beam import load_artifact
from beamlearn.pipeline import FittedPipeline

__all__ = ["ModelHandler"]


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


class ModelHandler(base.ModelHandler[Any, Any, FittedPipeline]):
    """RunInference's handler for a beamlearn artifact (see the module docstring).

    Parameters
    ----------
    model_uri:
        The artifact, on any filesystem Beam knows (local, ``gs://``, ``s3://``, ...).
    min_batch_size, max_batch_size, max_batch_duration_secs:
        ``BatchElements``' batching (``max_batch_duration_secs`` for streaming).
    share_model_across_processes:
        Load one copy per machine, shared by the SDK worker processes.
    large_model, model_copies:
        As Beam's ModelHandler (both imply sharing).
    batch_size:
        The batch size :meth:`~beamlearn.FittedPipeline.transform` uses inside a group of rows.

    Examples
    --------
    >>> import beamlearn as bl
    >>> handler = ModelHandler("model.blm", min_batch_size=8, max_batch_size=256)
    >>> handler.batch_elements_kwargs()
    {'min_batch_size': 8, 'max_batch_size': 256}
    """

    def __init__(self, model_uri: str, *, min_batch_size: int | None = None, max_batch_size: int | None = None,
                 max_batch_duration_secs: int | None = None, share_model_across_processes: bool = False,
                 large_model: bool = False, model_copies: int | None = None, batch_size: int = 65536,
                 **kwargs: Any) -> None:
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         max_batch_duration_secs=max_batch_duration_secs, large_model=large_model,
                         model_copies=model_copies, **kwargs)
        self._model_uri, self._share, self._batch_size = model_uri, share_model_across_processes, batch_size

    @property
    def model_uri(self) -> str:
        """The artifact the next :meth:`load_model` reads."""
        return self._model_uri

    def load_model(self) -> FittedPipeline:
        """Load (and verify) the artifact."""
        return load_artifact(self._model_uri)

    def run_inference(self, batch: Sequence[Any], model: FittedPipeline,
                      inference_args: dict[str, Any] | None = None) -> Iterable[Any]:
        """Transform a group of dict rows (one vectorized transform; PredictionResults in order) or of
        RecordBatches (each transformed; RecordBatches out)."""
        if not batch:
            return []
        if isinstance(batch[0], (pa.RecordBatch, pa.Table)):
            return [_one_batch(model.transform(b, batch_size=self._batch_size)) for b in batch]
        out = model.transform(list(batch), batch_size=self._batch_size).to_pylist()
        return [base.PredictionResult(example, inference, self._model_uri) for example, inference in zip(batch, out)]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """A beamlearn pipeline takes no inference arguments."""
        if inference_args:
            raise ValueError(f"beamlearn's ModelHandler takes no inference_args, got {sorted(inference_args)}")

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """Bytes of a group: Arrow buffer sizes for RecordBatches, a cheap estimate for dict rows."""
        if batch and isinstance(batch[0], (pa.RecordBatch, pa.Table)):
            return sum(b.nbytes for b in batch)
        return sum(len(str(r)) for r in batch)

    def get_metrics_namespace(self) -> str:
        """The metrics namespace of RunInference with this handler."""
        return "BeamlearnRunInference"

    def update_model_path(self, model_path: str | None = None) -> None:
        """Read the artifact from ``model_path`` on the next load (``WatchFilePattern`` model updates)."""
        if model_path:
            self._model_uri = model_path

    def share_model_across_processes(self) -> bool:
        """One copy per machine when asked for (or when ``large_model`` / ``model_copies`` are set)."""
        return self._share or super().share_model_across_processes()
