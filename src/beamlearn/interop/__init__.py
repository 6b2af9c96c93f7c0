"""Interop with the ecosystem: scikit-learn both ways (:func:`from_sklearn`,
:meth:`~beamlearn.FittedPipeline.to_sklearn`), ONNX export (:meth:`~beamlearn.FittedPipeline.to_onnx`); Beam's
RunInference handler is :class:`beamlearn.beam.ModelHandler`.  Importing this package imports neither scikit-learn nor any other
heavy library; each is imported where it is used."""

from beamlearn.interop.onnx import to_onnx
from beamlearn.interop.sklearn import from_sklearn
from beamlearn.interop.sklearn_export import to_sklearn
from beamlearn.pipeline import provide

provide("to_sklearn", to_sklearn)
provide("to_onnx", to_onnx)

__all__ = ["from_sklearn", "to_onnx", "to_sklearn"]
