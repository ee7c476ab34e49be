"""The one exception type the CLI turns into a single red line and exit code 1."""


class SageError(Exception):
    """A user-facing error: bad input, a refused overwrite, a mismatched artifact.

    The message is one line that names the file, line or value at fault and, where there is one,
    the fix. Anything else raised is a bug and keeps its traceback.
    """
