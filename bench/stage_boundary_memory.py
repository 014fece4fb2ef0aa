"""Peak RSS of Beam's in-process FnApiRunner when N file URIs cross one stage boundary, by boundary kind.

Isolates the memory growth `bench/batch_throughput.py` sees between 10k and 50k images: no images, no model,
only URIs. Modes: fused (no boundary), distinct (what MatchInputs used before compressed shards), reshuffle,
buckets (GroupByKey on 64 hash buckets, then a set per bucket), sets (CombinePerKey(ToSet) on 64 buckets),
shards (MatchInputs itself: a manifest of N URIs, dealt into 64 compressed shards).

    .venv/bin/python bench/stage_boundary_memory.py 10000 distinct
    .venv/bin/python bench/stage_boundary_memory.py 50000 shards
"""
import os, resource, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
n, mode = int(sys.argv[1]), sys.argv[2]
opts = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
manifest = os.path.join(tempfile.mkdtemp(), "inputs.txt")
with open(manifest, "w") as fh:
    fh.writelines(f"/tmp/tagger-bench/mem-50000/img_{i:06d}.jpg\n" for i in range(n))
with beam.Pipeline(runner=FnApiRunner(), options=opts) as p:
    uris = p | beam.Create([0]) | beam.FlatMap(lambda _: (f"/tmp/tagger-bench/mem-50000/img_{i:06d}.jpg" for i in range(n)))
    if mode == "distinct":
        out = uris | beam.Distinct()
    elif mode == "buckets":
        out = (uris | beam.Map(lambda u: (hash(u) % 64, u)) | beam.GroupByKey()
               | beam.FlatMap(lambda kv: sorted(set(kv[1]))))
    elif mode == "sets":
        out = (uris | beam.Map(lambda u: (hash(u) % 64, u)) | beam.CombinePerKey(beam.combiners.ToSetCombineFn())
               | beam.FlatMap(lambda kv: sorted(kv[1])))
    elif mode == "shards":
        sys.modules.setdefault("apache_beam.ml.inference.model_manager", None)  # as `tagger tag` does: no torch
        from pipelines.inputs import MatchInputs
        out = p | MatchInputs([manifest])
    elif mode == "fused":
        out = uris
    else:
        out = uris | beam.Reshuffle()
    _ = out | beam.Map(lambda u: None)
print(n, mode, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "MB")
