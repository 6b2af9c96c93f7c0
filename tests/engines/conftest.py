"""The Spark fixtures the Spark engine's test modules share: one standalone cluster and session per test process."""

from __future__ import annotations

import shutil

import pytest

SPARK_CONF = {"spark.executor.memory": "512m", "spark.executor.cores": "1", "spark.cores.max": "2",
              "spark.driver.memory": "512m", "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4",
              "spark.python.worker.memory": "256m", "spark.task.maxFailures": "1"}  # a bad row fails at once


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """``spark://127.0.0.1:PORT``: a standalone master and two one-core workers, stopped at the end."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java (.ci/run installs it)")
    from beamlearn.engines.spark_jobs import standalone_cluster

    with standalone_cluster(2, cores=1, memory="1g", log_dir=str(tmp_path_factory.mktemp("spark"))) as url:
        yield url


@pytest.fixture(scope="session")
def spark(cluster):
    """One SparkSession (two executors) on :func:`cluster`."""
    from beamlearn import spark as bls

    session = bls.session(cluster, SPARK_CONF, app_name="beamlearn-tests")
    yield session
    session.stop()
