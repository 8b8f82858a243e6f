"""Error types raised by roar-nb's core.

Core code raises these; front ends turn them into one line (CLI: stderr and a
non-zero exit; magic: one printed line; server: JSON error). Nothing here knows
about any front end.
"""


class RoarError(Exception):
    """Base class of every error roar-nb reports to the user as one line."""

    exit_code = 1


class NotInitialized(RoarError):
    """No .roar/ directory was found for this project."""


class StoreError(RoarError):
    """The lineage database is unreadable, corrupt, locked or read-only."""


class RefNotFound(RoarError):
    """A job, artifact or session reference matched nothing."""


class AmbiguousRef(RoarError):
    """A reference (hash prefix) matched several things."""


class UsageError(RoarError):
    """The user's arguments are invalid."""

    exit_code = 2


class ConfigError(RoarError):
    """A configuration key or value is invalid."""


class TracerUnavailable(RoarError):
    """The requested capture backend cannot run here."""


class ProxyError(RoarError):
    """The S3 proxy cannot start, stop or be found."""
