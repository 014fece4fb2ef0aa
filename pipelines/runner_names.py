"""Runner names `tagger tag` treats specially. Beam-free, so the CLI can decide before importing Beam."""

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner")  # run in-process on Beam's FnApiRunner (never the Prism download)
# Beam's DaskRunner, by short name (Beam itself rejects it) or module path: runs pipelines.dask_runner's adapter.
DASK_RUNNERS = ("DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner", "pipelines.dask_runner.DaskRunner")
