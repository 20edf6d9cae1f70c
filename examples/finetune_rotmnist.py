"""Fine-tune a published rot-MNIST weight with a new 5-class head on a few hundred rotated digits.

The task: digits 0-4 only (5 classes). Training digits: the first ``--train-size`` MNIST
*training* digits of classes 0-4 (a generator seeded ``--seed`` picks them), each rotated by
its own angle U[0, 360); held-out digits: the first ``--test-size`` MNIST *test* digits of
classes 0-4, rotated the same way with another seed. Images go through
``agcnn_zoo.transforms(weight)`` as uint8 tensors (rotation in uint8, then the weight's
transposition and mean/std), exactly as a user's own digits would.

    python examples/finetune_rotmnist.py --data-dir ../shared/data

prints the held-out accuracy of the pretrained backbone with its fresh 5-way head, after
fine-tuning, and of the same network trained from random initialisation with the same budget.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

import agcnn_zoo as zoo
from agcnn_zoo.data import read_idx

CLASSES = 5


def rotated_uint8(images: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    angles = torch.rand(len(images), generator=gen, dtype=torch.float64) * 360.0
    return torch.stack([TF.rotate(img.unsqueeze(0), float(a), InterpolationMode.BILINEAR)
                        for img, a in zip(images, angles)])                   # [N, 1, 28, 28] uint8


def digits(mnist: Path, split: str, n: int, seed: int):
    prefix = "train" if split == "train" else "t10k"
    x = torch.from_numpy(read_idx(mnist / f"{prefix}-images-idx3-ubyte.gz").copy())
    y = torch.from_numpy(read_idx(mnist / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    keep = torch.nonzero(y < CLASSES).flatten()
    if split == "train":
        keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))]
    keep = keep[:n]
    return rotated_uint8(x[keep], seed + 1), y[keep]


@torch.no_grad()
def accuracy(model, x, y, batch=500) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                  for i in range(0, len(x), batch))
    return 100.0 * correct / len(x)


def train(model, x, y, epochs: int, lr: float, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="p4cnn_rotmnist", help="a rot-MNIST weight id")
    ap.add_argument("--data-dir", default="../shared/data", help="folder with mnist/ IDX files")
    ap.add_argument("--train-size", type=int, default=300)
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    mnist = Path(args.data_dir)
    mnist = mnist / "mnist" if (mnist / "mnist").is_dir() else mnist
    tf = zoo.transforms(args.model)
    x_tr, y_tr = digits(mnist, "train", args.train_size, args.seed)
    x_te, y_te = digits(mnist, "test", args.test_size, args.seed + 100)
    x_tr, x_te = tf(x_tr), tf(x_te)
    print(f"{len(x_tr)} training / {len(x_te)} held-out rotated digits of classes 0-{CLASSES - 1}; "
          f"{args.epochs} epochs, Adam lr {args.lr}, batch {args.batch_size}, seed {args.seed}")

    torch.manual_seed(args.seed)
    model = zoo.create_model(args.model, pretrained=True, num_classes=CLASSES)
    before = accuracy(model, x_te, y_te)
    t0 = time.time()
    train(model, x_tr, y_tr, args.epochs, args.lr, args.batch_size, args.seed)
    after = accuracy(model, x_te, y_te)
    print(f"{args.model} backbone, fresh 5-way head: {before:.2f}% before, {after:.2f}% after "
          f"fine-tuning ({time.time() - t0:.0f} s)")

    torch.manual_seed(args.seed)
    scratch = zoo.create_model(args.model.split(".")[0], num_classes=CLASSES)
    train(scratch, x_tr, y_tr, args.epochs, args.lr, args.batch_size, args.seed)
    print(f"same network from random initialisation, same budget: {accuracy(scratch, x_te, y_te):.2f}%")


if __name__ == "__main__":
    main()
