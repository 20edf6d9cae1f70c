"""Test sets of the zoo's weights: readers of the original file formats, and safe downloads.

Every reader returns an :class:`EvalSet` (a map-style ``torch.utils.data.Dataset`` that also
yields whole batches in a fixed order) holding the images preprocessed exactly as the original
training code fed them to the models. One module per dataset:

* :mod:`.rotmnist`  ``rotmnist``: mnist_rotation_new (.amat in a zip), canonical
* :mod:`.mnist`     MNIST IDX files (:func:`read_idx`) and ``mnist-rot-aux`` (auxiliary)
* :mod:`.cifar10`   ``cifar10`` (pickle batch, canonical) and ``cifar10-jpeg`` (auxiliary)
* :mod:`.pcam`      ``pcam``: PatchCamelyon h5 files, canonical
* :mod:`.sample`    ``mnist-rot-sample``: 300 mnist-rot-aux digits shipped in the package
* :mod:`._common`   the :class:`EvalSet` base, errors, the data folder, downloads
* :mod:`.registry`  :data:`EVAL_SETS`, :data:`CANONICAL_SET`, :func:`load_eval_set`

Downloads go through :mod:`agcnn_zoo.io` (size caps, deadline, HTML refused, mirror, the one
offline switch ``AGCNN_ZOO_OFFLINE=1``) into a temp file that is checked (pinned md5 where
known, structure otherwise) before it is renamed into place: a file that fails is removed and
named in the error. NaN / infinite pixels and non-integer labels are refused when read.
"""
from __future__ import annotations

from ..io.files import md5_file
from ._common import (DATA_ENV, IMAGENET_MEAN, IMAGENET_STD, OFFLINE_ENV, ChecksumError,
                      DataFormatError, DataNotFoundError, DownloadError, EvalSet, Remote,
                      default_data_dir, download_url, fetch_remote)
from .cifar10 import (CIFAR10_CLASSES, CIFAR10_FOLDER, CIFAR10_REMOTE, CIFAR10_TEST_MD5,
                      CIFAR10JPEG, CIFAR10Test)
from .mnist import MNIST_REMOTES, MNIST_ROT_AUX_SEED, MNISTRotAux, read_idx, rotate_digits
from .pcam import PCAM_MEAN, PCAM_REMOTES, PCAM_STD, PCamTest
from .registry import CANONICAL_SET, EVAL_SETS, load_eval_set
from .sample import SAMPLE_DIR, SAMPLE_SIZE, MNISTRotSample
from .rotmnist import (ROTMNIST_FILES, ROTMNIST_NPZ, ROTMNIST_REMOTE, ROTMNIST_SIZES,
                       ROTMNIST_STATS, RotMNIST)

__all__ = ["EvalSet", "RotMNIST", "MNISTRotAux", "MNISTRotSample", "SAMPLE_DIR", "SAMPLE_SIZE", "CIFAR10Test", "CIFAR10JPEG", "PCamTest",
           "Remote", "DataNotFoundError", "ChecksumError", "DataFormatError", "DownloadError",
           "EVAL_SETS", "CANONICAL_SET", "load_eval_set", "default_data_dir", "download_url",
           "fetch_remote", "md5_file", "rotate_digits", "read_idx", "MNIST_ROT_AUX_SEED",
           "DATA_ENV", "OFFLINE_ENV", "CIFAR10_CLASSES", "CIFAR10_FOLDER", "CIFAR10_REMOTE",
           "CIFAR10_TEST_MD5", "IMAGENET_MEAN", "IMAGENET_STD", "MNIST_REMOTES", "PCAM_MEAN",
           "PCAM_STD", "PCAM_REMOTES", "ROTMNIST_FILES", "ROTMNIST_NPZ", "ROTMNIST_REMOTE", "ROTMNIST_SIZES",
           "ROTMNIST_STATS"]
