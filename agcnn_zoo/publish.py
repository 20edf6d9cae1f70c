"""Compatibility alias: the code lives in :mod:`agcnn_zoo.hub.publish`."""
from .hub.publish import *  # noqa: F401,F403
from .hub.publish import __all__  # noqa: F401
