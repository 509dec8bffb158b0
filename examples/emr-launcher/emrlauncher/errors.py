"""Named exceptions. Every message names the file, field or region at fault and says what to do."""

from __future__ import annotations


class EmrLauncherError(Exception):
    """Base of everything emrlauncher raises on purpose."""


class RequestError(EmrLauncherError, ValueError):
    """The arguments of trigger_data_load are wrong (regions, variable names or values)."""


class ConfigError(EmrLauncherError):
    """A config file is missing, unreadable, malformed, or lacks a field EMR needs."""


class PlaceholderError(ConfigError):
    """A ${NAME} placeholder has no value among the variables."""

    def __init__(self, placeholder: str, location: str, known: list[str]) -> None:
        self.placeholder = placeholder
        self.location = location
        super().__init__(
            f"Unknown placeholder ${{{placeholder}}} at {location}: pass {placeholder} in the "
            f"variables (known: {', '.join(known) or 'none'})."
        )


class LaunchError(EmrLauncherError):
    """EMR refused to start a cluster. `launched` holds the clusters already started."""

    def __init__(self, region: str, reason: str, launched: dict[str, str]) -> None:
        self.region = region
        self.launched = dict(launched)
        started = ", ".join(f"{r}={c}" for r, c in launched.items()) or "none"
        super().__init__(
            f"EMR refused to start the cluster in {region}: {reason}. Already started: {started}; "
            "terminate those or launch only the remaining regions."
        )
