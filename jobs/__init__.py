"""Entry points: the ``tagger`` command and the scheduled jobs."""
