"""beamlearn on Apache Spark: the public names of the Spark engine.

    import beamlearn as bl
    from beamlearn import spark as bls

    spark = bls.session("spark://HOST:7077", {"spark.executor.memory": "2g"})   # or your own SparkSession
    df = spark.read.parquet("data/")
    fitted = bls.fit(bl.Pipeline([bl.SimpleImputer(num), bl.StandardScaler(num)]), df)
    out = bls.transform(fitted, df)                      # a lazy Spark DataFrame
    out, dead = bls.transform(fitted, df, with_errors=True)
    bls.compile_reasons(fitted, df)                      # [] when the transform runs as Spark SQL (no Python)
    result = bls.evaluate(df, model=fitted, label="y", prediction="prediction")

:func:`run_fit`, :func:`run_transform` and :func:`run_evaluate` run whole jobs over files (the CLI's
``--engine spark --master URL --conf key=value``).

Examples
--------
>>> from beamlearn import spark as bls
>>> sorted(bls.__all__)[:3]
['DEAD_LETTER_COLUMNS', 'compile_reasons', 'evaluate']
"""

from beamlearn.engines.spark import DEAD_LETTER_COLUMNS, fit, run_action, session, spark_data
from beamlearn.engines.spark_eval import evaluate
from beamlearn.engines.spark_jobs import (
           parse_spark_args,
           run_evaluate,
           run_fit,
           run_transform,
           standalone_cluster,
)
from beamlearn.engines.spark_transform import compile_reasons, transform

__all__ = ["DEAD_LETTER_COLUMNS", "compile_reasons", "evaluate", "fit", "parse_spark_args", "run_action",
           "run_evaluate", "run_fit", "run_transform", "session", "spark_data", "standalone_cluster", "transform"]
