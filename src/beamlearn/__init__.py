"""beamlearn: machine-learning data pipelines of mergeable fits and vectorized transforms.

The same pipeline fits in-process (the default) or on Apache Beam, and its fitted form transforms tables,
files and single records identically.  See the README for a tour.
"""

from beamlearn.version import __version__

from beamlearn import errors  # noqa: E402
from beamlearn.artifact import load  # noqa: E402 - also installs FittedPipeline.save
from beamlearn.engines import local as _local_engine  # noqa: E402,F401 - installs Pipeline.fit's engine
from beamlearn.engines import update as _update  # noqa: E402,F401 - installs FittedPipeline.update
from beamlearn.interop import from_sklearn  # noqa: E402 - also installs FittedPipeline.to_sklearn
from beamlearn.io import DeadLetters  # noqa: E402
from beamlearn.pipeline import FittedPipeline, Pipeline  # noqa: E402
from beamlearn.steps import *  # noqa: E402,F403
from beamlearn.steps import __all__ as _steps_all  # noqa: E402
from beamlearn.models import *  # noqa: E402,F403
from beamlearn.models import __all__ as _models_all  # noqa: E402

__all__ = ["__version__", "errors", "load", "from_sklearn", "DeadLetters", "Pipeline", "FittedPipeline", *_steps_all,
           *_models_all]
