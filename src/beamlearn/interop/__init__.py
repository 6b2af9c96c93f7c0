"""Interop with the ecosystem: scikit-learn both ways (:func:`from_sklearn`,
:meth:`~beamlearn.FittedPipeline.to_sklearn`).  Importing this package imports neither scikit-learn nor any other
heavy library; each is imported where it is used."""

from beamlearn.interop.sklearn import from_sklearn
from beamlearn.interop.sklearn_export import to_sklearn
from beamlearn.pipeline import provide

provide("to_sklearn", to_sklearn)

__all__ = ["from_sklearn", "to_sklearn"]
