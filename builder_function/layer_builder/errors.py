"""Named exceptions. Permanent input errors are refused and never retried; transient ones are.

Every message names the file, package or limit at fault and says what to do.
"""


class LayerBuildError(Exception):
    """Base of everything the builder raises on purpose."""

    #: A short machine-readable kind, used in reports, events and metrics.
    kind = "build_error"
    #: Permanent errors are refused (CLI exit 2, no Lambda retry).
    permanent = False
    #: A tool's whole output behind the message (a failed source build's), for the report.
    log = ""


class InputError(LayerBuildError):
    """The upload or project is wrong. Retrying cannot help: fix the input."""

    kind = "input_error"
    permanent = True


class UnsafeArchiveError(InputError):
    kind = "unsafe_archive"


class ProjectError(InputError):
    """Pipfile, Pipfile.lock or project layout is missing or invalid."""

    kind = "invalid_project"


class LockError(InputError):
    """The lock cannot be installed exactly: stale, unpinned, unhashed, VCS, unknown index..."""

    kind = "invalid_lock"


class PackageNotFoundError(InputError):
    kind = "package_not_found"


class HashMismatchError(InputError):
    kind = "hash_mismatch"


class NoWheelError(InputError):
    """A locked package has no wheel for the target runtime and architecture."""

    kind = "no_wheel_for_target"


class TargetMismatchError(InputError):
    """The built tree contains binaries for another machine, or its packages do not import."""

    kind = "target_mismatch"


class LayerTooLargeError(InputError):
    kind = "layer_too_large"


class TeamError(InputError):
    """An upload outside every team's folder, or a change outside the uploading team's layers."""

    kind = "team_refused"


class ConfigurationError(LayerBuildError):
    """The operator's settings are wrong (missing variable, bad value). Permanent."""

    kind = "configuration_error"
    permanent = True


class TransientError(LayerBuildError):
    """Network, throttling, an exhausted time budget or a full disk: a retry may succeed."""

    kind = "transient_error"


class IndexUnreachableError(TransientError):
    kind = "index_unreachable"


class OutOfTimeError(TransientError):
    kind = "out_of_time"


class DiskFullError(TransientError):
    kind = "disk_full"


class SourceBuildError(InputError):
    """An operator-allowed sdist did not build: its code does not compile here. Not retried."""

    kind = "source_build_failed"

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        #: The build's whole output, for the report.
        self.log = log


class ContainmentError(InputError):
    """Code under check killed the process that supervises its run: processes may have escaped."""

    kind = "containment_broken"


def error_report(exc: LayerBuildError, max_log_chars: int) -> dict[str, str]:
    """What a report says of a build that stopped: kind, message, whether a retry may help, and
    the end of the tool's log where there is one (callers redact the result)."""
    error = {"kind": exc.kind, "message": str(exc), "retryable": str(not exc.permanent)}
    if exc.log:
        error["log"] = exc.log[-max_log_chars:]
    return error
