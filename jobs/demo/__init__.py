"""``tagger demo``: real images from the package registries, a first model, one tagging run, the analyst queries.

Modules, one job each: ``sources`` finds (and installs when missing) Debian's Fashion-MNIST and scikit-image's
bundled photos; ``mosaic`` composes labelled multi-label images; ``dataset`` writes the training set and the
archive to tag (idempotently); ``steps`` runs train/tag and reads the results back.
"""
