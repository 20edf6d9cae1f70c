"""Compatibility alias: the code lives in :mod:`agcnn_zoo.hub.convert`."""
from .hub.convert import *  # noqa: F401,F403
from .hub.convert import __all__  # noqa: F401
