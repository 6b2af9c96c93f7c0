"""``python -m beamlearn.serving``: the container's entry point — serve ``$BEAMLEARN_MODEL`` on ``0.0.0.0:$PORT``
(``$BEAMLEARN_WORKERS`` processes), loading only the serving path."""

from __future__ import annotations

import os
import sys

from beamlearn.errors import BeamlearnError
from beamlearn.serving import serve


def main() -> int:
    """Serve the artifact named by the environment; a bad artifact is one line on stderr and exit code 2."""
    model = os.environ.get("BEAMLEARN_MODEL", "/models/model.blm")
    try:
        serve(model, host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "8080")),
              workers=int(os.environ.get("BEAMLEARN_WORKERS", "1")), name=os.environ.get("BEAMLEARN_MODEL_NAME"))
    except BeamlearnError as exc:
        sys.stderr.write(f"beamlearn: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
