"""The base of every error a user can act on; the CLI prints these as one line and exits non-zero."""


class UserError(Exception):
    """Bad input, configuration or state, explained in one line (no traceback for the user)."""
