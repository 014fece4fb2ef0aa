"""Runner names `tagger tag` runs in-process (Beam's FnApiRunner). Beam-free, so the CLI can decide before
importing Beam."""

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "PrismRunner")
