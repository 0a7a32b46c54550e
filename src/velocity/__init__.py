"""velocity: reproducible federated-learning experiments.

Describe runs (RunSpec), simulate them with real local training, sweep, compare, archive and
reproduce. The CLI (``velocity``) is a thin shell over these functions.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from velocity.errors import ArchiveError, InputError, RunError, SpecError, VelocityError

try:
    __version__ = _dist_version("velocity-fl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = [
    "ArchiveError",
    "InputError",
    "RunError",
    "SpecError",
    "VelocityError",
    "__version__",
]
