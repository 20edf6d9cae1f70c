"""Compatibility alias: the code lives in :mod:`agcnn_zoo.hub.manifest`."""
from .hub.manifest import *  # noqa: F401,F403
from .hub.manifest import __all__  # noqa: F401
