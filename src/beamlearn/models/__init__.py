"""Estimators built on reductions (linear, bayes, cluster) and the scikit-learn adapter.

Importing this package registers every built-in model step.
"""

from beamlearn.models.base import ConvergenceWarning, Estimator
from beamlearn.models.bayes import *  # noqa: F403
from beamlearn.models.bayes import __all__ as _bayes
from beamlearn.models.cluster import *  # noqa: F403
from beamlearn.models.cluster import __all__ as _cluster
from beamlearn.models.linear import *  # noqa: F403
from beamlearn.models.linear import __all__ as _linear
from beamlearn.models.sklearn import *  # noqa: F403
from beamlearn.models.sklearn import __all__ as _sklearn

__all__ = ["Estimator", "ConvergenceWarning", *_linear, *_bayes, *_cluster, *_sklearn]
