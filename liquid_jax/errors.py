"""Errors a person can act on.

``UserError`` (a ValueError) marks bad input: a path, a file, a format, a setting or a
mismatch between the parts that the user can fix. Its message names the thing and says
what to do; the ``liquid-jax`` command prints it in one or two lines and exits with code
2 (the traceback only with ``--verbose``).
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input the user can fix; the message names the file, key or flag and the remedy."""
