"""The base of every error a user can act on, and the exit statuses of ``tagger`` (docs/cli.md)."""

EXIT_OK = 0
EXIT_FAILED = 1  # the job failed at run time: an unexpected error (a bug, a full disk, a lost connection)
EXIT_USAGE = 2  # bad option, value, input or state, found before (or instead of) doing the work
EXIT_TOO_MANY_FAILURES = 3  # the run finished and committed its output, but more inputs failed than allowed
# 75 (EX_TEMPFAIL): a scheduled job's lock is held by another run (jobs/scheduled.py)
# 130 / 143: interrupted by SIGINT / SIGTERM (pipelines/interrupts.py)


class UserError(Exception):
    """Bad input, configuration or state, explained in one line (no traceback for the user)."""
