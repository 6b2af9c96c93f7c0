"""Fit/transform steps, one module per family.  Importing this package registers every built-in step."""

from beamlearn.steps.base import Step, map_columns, register_step, registered_steps, replace_columns, step_class
from beamlearn.steps.derive import *  # noqa: F403
from beamlearn.steps.derive import __all__ as _derive
from beamlearn.steps.discretize import *  # noqa: F403
from beamlearn.steps.discretize import __all__ as _discretize
from beamlearn.steps.encode import *  # noqa: F403
from beamlearn.steps.encode import __all__ as _encode
from beamlearn.steps.expr import *  # noqa: F403
from beamlearn.steps.expr import __all__ as _expr
from beamlearn.steps.impute import *  # noqa: F403
from beamlearn.steps.impute import __all__ as _impute
from beamlearn.steps.scale import *  # noqa: F403
from beamlearn.steps.scale import __all__ as _scale
from beamlearn.steps.text import *  # noqa: F403
from beamlearn.steps.text import __all__ as _text

__all__ = ["Step", "register_step", "registered_steps", "step_class", "replace_columns", "map_columns",
           *_scale, *_impute, *_encode, *_discretize, *_text, *_expr, *_derive]
