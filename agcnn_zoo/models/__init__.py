"""Model families; importing this package registers every model."""
from . import rotmnist  # noqa: F401
from ._base import ZooModel  # noqa: F401
from . import allcnnc  # noqa: F401
from . import resnet  # noqa: F401
from . import densenet  # noqa: F401
