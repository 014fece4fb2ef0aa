"""Beam's DaskRunner with the translation fixed for what this project's pipelines use (Beam 2.77).

Beam 2.77's ``apache_beam.runners.dask.dask_runner.DaskRunner`` turns each transform into a dask.bag
operation, but (each reproduced and fixed by a test in tests/test_dask_runner.py):

1. a multi-output ParDo sends every element to every output (dead letters got images);
2. elements a DoFn emits from ``finish_bundle`` are dropped (``BatchElements(32)`` lost 232 of 1,000; our
   Parquet writers report their files from there);
3. only the last leaf of the pipeline is computed (other branches silently never run);
4. GroupByKey and Reshuffle keep their input's partitions (after a one-element Create: one task does all);
5. no metrics (``metrics()`` raises);

and it computes a side input with dask's local scheduler inside the task that reads it, outside the
cluster's scheduling (and apart from any other consumer of the same branch).

This :class:`DaskRunner` keeps Beam's options (``--dask_client_address`` ...) and transform overrides and
replaces the translation: every PCollection is a bag of ``WindowedValue``; a ParDo runs each partition as
one bundle (start, process, finish) on a DoFn set up once per worker process and reused, collecting every
output by tag plus the bundle's counters; GroupByKey and Reshuffle shuffle into ``--dask_npartitions``
partitions (default: 4 per cluster thread) by a process-independent hash; side inputs are dask dependencies;
all leaves are computed, and only counts and counters come back to the launcher (no per-element state
there). Scope: bounded pipelines in the global window, counters only (no distributions, gauges, state,
timers or splittable DoFns).
"""
from __future__ import annotations

import logging
import operator
import os
import pickle
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricKey, MetricResult, MetricsContainer
from apache_beam.metrics.metric import MetricResults
from apache_beam.metrics.metricbase import MetricName
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.dask_runner import DaskRunner as BeamDaskRunner
from apache_beam.runners.dask.overrides import _Create, _Flatten, _GroupByKeyOnly, _Reshuffle, dask_overrides
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils import counters
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

LOG = logging.getLogger(__name__)
PARTITIONS_PER_THREAD = 4

__all__ = ["DaskOptions", "DaskRunner", "cluster_shape"]


def _global(value: Any) -> WindowedValue:
    return WindowedValue(value, MIN_TIMESTAMP, (GlobalWindow(),))


def stable_partition(value: Any, partitions: int) -> int:
    """The same partition for equal keys in every process (``hash()`` of a str differs between processes)."""
    return zlib.crc32(pickle.dumps(value, protocol=4)) % partitions


# ---------------------------------------------------------------------------------------- worker side
_SET_UP: dict[str, list[beam.DoFn]] = {}  # step id -> DoFns set up in this worker process, free for a bundle
_SET_UP_LOCK = threading.Lock()


@dataclass
class _Step:
    """What a worker needs to run one ParDo bundle (pickled into the task graph once per ParDo)."""

    step_id: str  # unique per pipeline submission: set-up DoFns are reused only for the same step
    label: str
    fn_payload: bytes
    args: tuple
    kwargs: dict
    tags: tuple  # output tags, None = main
    side_views: tuple  # (view class, view options) per side input, in order
    window_fn: Any


class _Collect(Receiver):
    def __init__(self, values: list) -> None:
        self.values = values

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append(windowed_value)


class _Receivers(dict):
    """Tag -> receiver appending to that tag's list (Beam's version appends every tag to one list)."""

    def __init__(self, outputs: dict) -> None:
        super().__init__()
        self.outputs = outputs

    def __missing__(self, tag):
        if tag not in self.outputs:
            raise ValueError(f"output to undeclared tag {tag!r}")
        receiver = self[tag] = _Collect(self.outputs[tag])
        return receiver


def _take_fn(step: _Step) -> tuple[beam.DoFn, bool]:
    with _SET_UP_LOCK:
        free = _SET_UP.get(step.step_id)
        if free:
            return free.pop(), False
    return pickler.loads(step.fn_payload), True


def _run_bundle(items: Iterable[WindowedValue], step: _Step, *side_values: list) -> list:
    """One partition = one bundle. Returns ``[(outputs by tag, counters)]`` (one element: a valid bag)."""
    fn, fresh = _take_fn(step)
    outputs: dict = {tag: [] for tag in step.tags}
    receivers = _Receivers(outputs)
    handler = _OutputHandler(
        window_fn=step.window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    side_inputs = [SideInputMap(view, options, values) for (view, options), values in zip(step.side_views,
                                                                                            side_values)]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(step.label, state=None), side_inputs=side_inputs,
        input_args=list(step.args), input_kwargs=dict(step.kwargs), user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    container = MetricsContainer(step.label)
    sampler = statesampler.StateSampler("dask", counters.CounterFactory())
    previous = statesampler.get_current_tracker()
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(step.label, "process", metrics_container=container):
            if fresh:
                invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(item)
            invoker.invoke_finish_bundle()  # its outputs reach the receivers too
    finally:
        statesampler.set_current_tracker(previous)
    with _SET_UP_LOCK:  # only a DoFn whose bundle succeeded is reused
        _SET_UP.setdefault(step.step_id, []).append(fn)
    found = {key.metric: value for key, value in container.get_cumulative().counters.items()}
    return [(outputs, {(step.label, m.namespace, m.name): v for m, v in found.items()})]


def _teardown(submission: str) -> int:
    """Run on every worker when a job ends: tear down and forget its set-up DoFns (models, files, sets), so a
    long-lived cluster does not accumulate one set per nightly run."""
    with _SET_UP_LOCK:
        done = [key for key in _SET_UP if key.startswith(f"{submission}/")]
        fns = [fn for key in done for fn in _SET_UP.pop(key)]
    for fn in fns:
        try:
            fn.teardown()
        except Exception:  # best effort, like Beam's own teardown
            LOG.warning("teardown of %s failed", type(fn).__name__, exc_info=True)
    return len(fns)


def _select(partition: list, tag) -> list:
    return partition[0][0][tag]


def _bundle_counters(partition: list) -> list:
    return [("counters", partition[0][1])]


def _concat(partitions: list[list]) -> list:
    return [item for partition in partitions for item in partition]


def _drain(partition: Iterable) -> list:
    return [("elements", sum(1 for _ in partition))]


def _with_partition(partition: Iterable[WindowedValue], partitions: int, by_key: bool) -> list:
    return [(stable_partition(wv.value[0] if by_key else wv.value, partitions), wv) for wv in partition]


def _grouped(partition: Iterable) -> list[WindowedValue]:
    """(partition number, [(n, WindowedValue((key, value)))...]) groups -> GroupByKeyOnly's output:
    ``(key, [values as WindowedValue])`` in the global window, for GroupAlsoByWindow to finish."""
    by_key: dict = {}
    for _, items in partition:
        for _, wv in items:
            key, value = wv.value
            by_key.setdefault(key, []).append(value)
    return [_global((key, values)) for key, values in by_key.items()]


def _ungrouped(partition: Iterable) -> list[WindowedValue]:
    return [wv for _, items in partition for _, wv in items]


# ---------------------------------------------------------------------------------------- translation
@dataclass
class _Translator(PipelineVisitor):
    """Beam transforms -> dask bags, one per PCollection (Beam's visitor keys bags by transform)."""

    partitions: int
    submission: str = field(default_factory=lambda: uuid.uuid4().hex)
    bags: dict = field(default_factory=dict)  # PCollection -> bag of WindowedValue
    consumed: set = field(default_factory=set)
    bundles: list = field(default_factory=list)  # every ParDo's per-partition results (for counters)

    def visit_transform(self, node: AppliedPTransform) -> None:
        transform = node.transform
        main_inputs = [p for p in node.main_inputs.values() if not isinstance(p, beam.pvalue.PBegin)]
        inputs = [self.bags[p] for p in main_inputs]
        self.consumed.update(main_inputs)
        if isinstance(transform, _Create):
            out = self._create(transform.values)
        elif isinstance(transform, beam.ParDo):
            self._pardo(node, inputs[0])
            return
        elif isinstance(transform, _GroupByKeyOnly):
            out = self._shuffle(inputs[0], by_key=True).map_partitions(_grouped)
        elif isinstance(transform, _Reshuffle):
            out = self._shuffle(inputs[0], by_key=False).map_partitions(_ungrouped)
        elif isinstance(transform, _Flatten):
            import dask.bag as db

            out = db.concat(inputs) if inputs else self._create(())
        else:
            raise NotImplementedError(f"{__name__}.DaskRunner cannot run {type(transform).__name__} "
                                      f"({node.full_label})")
        self.bags[node.outputs[None]] = out

    def _create(self, values: Sequence) -> Any:
        import dask.bag as db

        values = [_global(v) for v in values]
        return db.from_sequence(values, npartitions=max(1, min(len(values), self.partitions)))

    def _shuffle(self, bag, by_key: bool):
        """Elements -> ``(n, [(n, element)...])`` groups over ``self.partitions`` partitions (dask's task
        shuffle places group n by its own hash: a partition may hold two groups, another none)."""
        numbered = bag.map_partitions(_with_partition, self.partitions, by_key)
        if numbered.npartitions < self.partitions:  # dask's groupby never makes more partitions than it gets
            numbered = numbered.repartition(self.partitions)
        return numbered.groupby(operator.itemgetter(0), npartitions=self.partitions, shuffle="tasks")

    def _pardo(self, node: AppliedPTransform, bag) -> None:
        import dask

        transform = node.transform
        main_input = next(iter(node.main_inputs.values()))
        tags = tuple(node.outputs)
        step = _Step(
            step_id=f"{self.submission}/{node.full_label}", label=node.full_label,
            fn_payload=pickler.dumps(transform.fn), args=tuple(transform.args), kwargs=dict(transform.kwargs),
            tags=tags, side_views=tuple((type(si), si._view_options()) for si in node.side_inputs),
            window_fn=main_input.windowing.windowfn,
        )
        side_values = []
        for si in node.side_inputs:
            self.consumed.add(si.pvalue)
            # Its partitions under their own keys: computed once, never re-run inside this task.
            parts = self.bags[si.pvalue].to_delayed(optimize_graph=False)
            side_values.append(dask.delayed(_concat)(parts))
        results = bag.map_partitions(_run_bundle, step, *side_values)
        self.bundles.append(results)
        for tag, pcoll in node.outputs.items():
            self.bags[pcoll] = results.map_partitions(_select, tag)

    def targets(self) -> list:
        """What to compute: every leaf (drained to a count) and every ParDo's counters."""
        leaves = [bag for pcoll, bag in self.bags.items() if pcoll not in self.consumed]
        return [bag.map_partitions(_drain) for bag in leaves] + [b.map_partitions(_bundle_counters)
                                                               for b in self.bundles]


# ---------------------------------------------------------------------------------------- results
class _Counters(MetricResults):
    def __init__(self, totals: dict[tuple[str, str, str], int]) -> None:
        self.results = [MetricResult(MetricKey(step, MetricName(ns, name)), v, v)
                        for (step, ns, name), v in totals.items()]

    def query(self, filter=None):
        return {self.COUNTERS: [r for r in self.results if self.matches(filter, r.key)], self.DISTRIBUTIONS: [],
                self.GAUGES: [], self.STRINGSETS: [], self.BOUNDED_TRIES: [], self.HISTOGRAMS: []}


class DaskResult(PipelineResult):
    """Waits for every target; the launcher receives per-partition counts and counters, never elements."""

    def __init__(self, client, futures, submission: str) -> None:
        super().__init__(PipelineState.RUNNING)
        self.client, self.futures, self.submission = client, futures, submission
        self.totals: dict[tuple[str, str, str], int] = {}

    def wait_until_finish(self, duration=None) -> str:
        import dask.distributed as ddist

        if self._state == PipelineState.DONE:
            return self._state
        try:
            timeout = duration / 1000 if duration is not None else None
            for _, result in ddist.as_completed(self.futures, timeout=timeout, with_results=True):
                for kind, value in result:
                    if kind == "counters":
                        for key, n in value.items():
                            self.totals[key] = self.totals.get(key, 0) + n
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state != PipelineState.RUNNING:
                self._close()
        return self._state

    def _close(self) -> None:
        try:
            self.client.run(_teardown, self.submission)
        except Exception:  # a lost worker has nothing left to tear down
            LOG.debug("DoFn teardown on the workers failed", exc_info=True)
        self.client.close()

    def cancel(self) -> str:
        self.client.cancel(self.futures)
        self._close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self) -> MetricResults:
        return _Counters(self.totals)


class DaskRunner(BeamDaskRunner):
    """``--runner=DaskRunner`` for this project: Beam's runner with the translation above."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        partitions = dask_options.pop("npartitions", None)
        dask_options.pop("partition_size", None)
        client = ddist.Client(**dask_options)
        try:
            if not partitions:
                partitions = PARTITIONS_PER_THREAD * (sum(client.nthreads().values()) or 1)
            pipeline.replace_all(dask_overrides())
            translator = _Translator(partitions)
            pipeline.visit(translator)
            # Unoptimized: graph optimization renames fused keys, and a branch renamed differently for two
            # targets would run twice (twice the side effects: files written, runs committed).
            futures = client.compute(translator.targets(), optimize_graph=False)
            return DaskResult(client, futures, translator.submission)
        except BaseException:
            client.close()
            raise


@dataclass(frozen=True)
class ClusterShape:
    workers: int
    threads: int
    threads_per_core: float  # the most crowded host's worker threads per core

    @property
    def intra_op_threads(self) -> int:
        """onnxruntime threads per task so the busiest host is not oversubscribed (at least 1)."""
        return max(1, int(1 / self.threads_per_core)) if self.threads_per_core else 1


def cluster_shape(address: str | None, timeout: float = 30, scheduler_file: str | None = None) -> ClusterShape:
    """Workers, threads and cores of the cluster at ``address`` (one short client connection)."""
    import dask.distributed as ddist

    with ddist.Client(address, timeout=timeout, scheduler_file=scheduler_file) as client:
        nthreads = client.nthreads()
        cores = client.run(lambda: len(os.sched_getaffinity(0)))
        hosts: dict[str, list[int]] = {}
        for worker, threads in nthreads.items():
            host = worker.rsplit(":", 1)[0]
            entry = hosts.setdefault(host, [0, cores.get(worker, 1)])
            entry[0] += threads
    crowding = max((threads / max(1, host_cores) for threads, host_cores in hosts.values()), default=0.0)
    return ClusterShape(len(nthreads), sum(nthreads.values()), crowding)
