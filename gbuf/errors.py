"""The one exception type for problems a user can fix (bad input, missing files...).

The CLI prints a ``GbufError`` as one line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class GbufError(Exception):
    """A user-fixable error. The message names the file and the problem in one line."""


def error_line(err: BaseException, *, last: bool = False, limit: int = 300) -> str:
    """One line of ``err``'s message for a one-line ``GbufError`` (the type's name when it has none).

    ``last``: the last non-blank line instead of the first (Blender puts its reason last, under
    the traceback it prints into the message). ``limit`` caps the length.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    line = lines[-1] if last else lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
