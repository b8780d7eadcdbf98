"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class GeochangeError(Exception):
    """Bad input or an impossible request, explained in one line for the user.

    Library code raises it for anything the user can fix (a missing file, no overlap, a bad
    option); the CLI prints ``error: <message>`` on stderr and exits with status 2, without a
    traceback. Anything else is a bug and keeps its traceback.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler: unwinds and cleans up as Ctrl-C does
    (every ``except KeyboardInterrupt`` and ``except BaseException`` clean-up sees it); exit status 143."""
