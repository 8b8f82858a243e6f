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


class ActiveStorageError(RoarError):
    """An active-storage reduction failed (base of the contract's errors below)."""

    status = 0  # the HTTP status the server answered (0: no answer)


class InvalidReduction(ActiveStorageError):
    """The server refused the reduction request as invalid (HTTP 400)."""

    status = 400


class ObjectNotFound(InvalidReduction):
    """The bucket or object does not exist (HTTP 400 with NoSuchKey / NoSuchBucket)."""


class AccessDenied(ActiveStorageError):
    """S3 refused the credentials or the access (HTTP 401 "Access Denied")."""

    status = 401


class UnknownOperation(ActiveStorageError):
    """The server does not know this reduction (HTTP 404)."""

    status = 404


class OverBudget(ActiveStorageError):
    """The reduction needs more memory than the server's budget (HTTP 413)."""

    status = 413


class ServerBusy(ActiveStorageError):
    """The server's memory or thread budget is in use; retry later (HTTP 503)."""

    status = 503


class UpstreamError(ActiveStorageError):
    """The object store failed or could not be reached (HTTP 500/502/504)."""

    status = 502


class ServerUnavailable(ActiveStorageError):
    """No active-storage server is configured or it cannot be reached."""
