# syntax=docker/dockerfile:1
# beamlearn serving image: `docker build -t beamlearn-serve .` then
#   docker run -p 8080:8080 -v "$PWD/model.blm:/models/model.blm:ro" beamlearn-serve
# (or COPY an artifact to /models/model.blm in a derived image).  Only what serving needs is installed.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /wheels . \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels \
        numpy pyarrow datasketches mmh3 PyYAML pydantic starlette "uvicorn[standard]" prometheus-client typer rich

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 beamlearn
COPY --from=build /wheels /wheels
# the serving path imports numpy, pyarrow and Starlette only: install beamlearn without its heavy dependencies
RUN python -m pip install --no-cache-dir --no-index --find-links /wheels \
        numpy pyarrow datasketches mmh3 PyYAML pydantic starlette "uvicorn[standard]" prometheus-client typer rich \
 && python -m pip install --no-cache-dir --no-index --no-deps --find-links /wheels beamlearn \
 && rm -rf /wheels
USER beamlearn
WORKDIR /home/beamlearn
ENV BEAMLEARN_MODEL=/models/model.blm PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/v2/health/ready', timeout=2)"]
ENTRYPOINT ["python", "-m", "beamlearn.serving"]
