"""The one exception type for problems a user can fix (bad input, missing files...).

The CLI prints a ``GbufError`` as one line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class GbufError(Exception):
    """A user-fixable error. The message names the file and the problem in one line."""
