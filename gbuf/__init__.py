"""gbuf: training data and networks for real-time-rendering video super-resolution.

Importing ``gbuf`` loads neither torch nor bpy; each subpackage imports its heavy
dependencies only when a function that needs them is called.
"""

from gbuf.errors import GbufError

__version__ = "0.1.0"

__all__ = ["GbufError", "__version__"]
