"""One dask.distributed LocalCluster (2 worker processes, 1 thread each) shared by every Dask test."""
from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def dask_cluster():
    from dask.distributed import LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           scheduler_port=0, silence_logs=logging.WARNING)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def dask_address(dask_cluster) -> str:
    return dask_cluster.scheduler_address
