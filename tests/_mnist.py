"""Test helper: the MNIST test set (IDX, gzipped) turned into rotated rot-MNIST-style digits.

The authors' rot-MNIST stores every digit transposed w.r.t. MNIST, so their raw checkpoints
expect transposed digits (``rotated_digits(..., transpose=True)``); the zoo's published weights
have that transposition folded in and take the digits as MNIST holds them (the default).
Rotation here uses torchvision per image, independently of ``agcnn_zoo.data``'s batched rotation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcnn_zoo.data import read_idx

IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


def load_mnist_test(mnist_dir: Path, limit: int | None = None):
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of the first ``limit`` test digits."""
    images = torch.from_numpy(read_idx(Path(mnist_dir) / IMAGES)[:limit].copy())
    labels = torch.from_numpy(read_idx(Path(mnist_dir) / LABELS)[:limit].astype(np.int64))
    return images, labels


def rotated_digits(images: torch.Tensor, seed: int = 0, transpose: bool = False) -> torch.Tensor:
    """Rotate each digit by its own angle ~ U[0, 360) (bilinear), optionally transpose, and
    standardise with the scalar mean/std of the result: ``[N, 1, 28, 28]`` float32."""
    gen = torch.Generator().manual_seed(seed)
    angles = torch.rand(len(images), generator=gen, dtype=torch.float64) * 360.0
    x = images.float().div(255.0).unsqueeze(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny ops: a second thread only adds hand-off costs
    try:
        out = torch.stack([TF.rotate(img, float(a), interpolation=InterpolationMode.BILINEAR)
                           for img, a in zip(x, angles)])
    finally:
        torch.set_num_threads(threads)
    if transpose:
        out = out.transpose(-2, -1).contiguous()
    return (out - out.mean()) / out.std()
