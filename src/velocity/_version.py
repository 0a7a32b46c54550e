"""The installed velocity version (``0.0.0+unknown`` when run from an uninstalled source tree)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

__all__ = ["__version__"]

try:
    __version__ = _dist_version("velocity-fl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
