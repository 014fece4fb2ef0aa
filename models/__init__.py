"""Model artifacts: the versioned registry, loading with integrity checks, and the training job."""
