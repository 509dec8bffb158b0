"""Launch EMR clusters from YAML/JSON config files: a sample library shipped as a Lambda layer."""

from .data_loader import trigger_data_load
from .errors import ConfigError, EmrLauncherError, LaunchError, PlaceholderError, RequestError

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "EmrLauncherError",
    "LaunchError",
    "PlaceholderError",
    "RequestError",
    "trigger_data_load",
]
