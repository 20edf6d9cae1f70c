"""``python -m agcnn_zoo train NAME ...`` (also under ``torchrun --nproc_per_node=N -m agcnn_zoo``)."""
from __future__ import annotations

import argparse
import shlex
import sys
import time

from safetensors.torch import save

from ..api import create_model
from ..command_errors import EXPECTED_ERRORS
from ..io.errors import one_line
from ..registry import get_entry
from .clock import TrainingStopped
from .engine import train
from .install import check_installable, install, target_for
from .speed import Speed

from ..hub.weight_id import WeightId


def add_command(s: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand of ``python -m agcnn_zoo`` (its parser ``s``)."""
    s.description = ("Train NAME from its recipe (shown by 'info NAME'); every recipe field "
                     "below overrides it and the output records what ran.")
    s.add_argument("name", help="registry name, e.g. p4cnn_rotmnist")
    s.add_argument("--dataset", help="training data: rotmnist (the paper's), mnist-rot-gen (offline "
                                     "stand-in from MNIST training digits), cifar10, cifar10-jpeg "
                                     "(offline JPEG copy of the CIFAR-10 training set), pcam")
    s.add_argument("--data-dir", help="where the data files are (default $AGCNN_ZOO_DATA)")
    s.add_argument("--download", action="store_true", help="download missing data files")
    s.add_argument("--out", help="run folder (default runs/<weight id>)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int, help="global batch (split over torchrun processes)")
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--optimizer", choices=["adam", "sgd"])
    s.add_argument("--momentum", type=float)
    s.add_argument("--milestones", type=_int_list, metavar="E1,E2,...",
                   help="MultiStepLR epochs (a shortened schedule scales them; '' for none)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--limit-train", type=int, metavar="K", help="train on the first K images only")
    s.add_argument("--limit-val", type=int, metavar="K", help="validate on the first K images only")
    s.add_argument("--limit-test", type=int, metavar="K", help="test on the first K images only")
    s.add_argument("--tag", help="weight id NAME.TAG (a-z, 0-9, '_', '-')")
    s.add_argument("--threads", type=int, help="torch CPU threads (fixed for bit-exact resume)")
    s.add_argument("--no-validation", action="store_true",
                   help="fixed-schedule protocol: the validation split joins the training data and "
                        "the weight after the last epoch is the result (no model selection)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    s.add_argument("--amp", choices=["bf16"], help="bf16 autocast (CUDA)")
    s.add_argument("--channels-last", action="store_true", help="channels_last inputs (CUDA)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--checkpoint-every", type=float, metavar="S",
                   help="also checkpoint inside an epoch, at most S seconds apart (long epochs)")
    s.add_argument("--time-limit", type=float, metavar="S",
                   help="checkpoint and stop after S seconds (exit 3; continue with --resume)")
    s.add_argument("--data-on-device", action="store_true",
                   help="keep the training pixels on the device (GPU: no copies per batch)")
    s.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    s.add_argument("--cudnn-benchmark", action="store_true",
                   help="cuDNN autotuning, non-deterministic kernels (GPU speed; resumes match "
                        "to rounding, not bit for bit)")
    s.add_argument("--update-manifest", action="store_true",
                   help="add the weight to your user manifest (<cache>/user/manifest.json; "
                        "create_model finds it at once); checked before training starts")
    s.add_argument("--manifest", metavar="PATH",
                   help="with --update-manifest: this user manifest instead (weights beside it)")
    s.add_argument("--into-package", action="store_true",
                   help="with --update-manifest: the package's own manifest and "
                        "agcnn_zoo/weights/ (what ships; maintainers)")
    s.add_argument("--default", action="store_true",
                   help="with --update-manifest: make it NAME's default weight (NAME has none)")
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the traceback of an error (default: one line saying what to do)")
    s.set_defaults(fn=run_cli)


def _int_list(text: str):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs, got {text!r}") from None


def _size_estimate(name: str) -> int:
    """Bytes of the weight file a run of ``name`` writes (its state dict as safetensors)."""
    return len(save({k: v.contiguous() for k, v in create_model(name).state_dict().items()}))


def _precheck(args, install_target):
    """Refuse, before any training, settings whose result could not be installed as asked."""
    for flag in ("manifest", "into_package", "default"):
        if getattr(args, flag) and not args.update_manifest:
            raise ValueError(f"--{flag.replace('_', '-')} goes with --update-manifest")
    for flag, value in (("--checkpoint-every", args.checkpoint_every),
                        ("--time-limit", args.time_limit)):
        if value is not None and not value > 0:
            raise ValueError(f"{flag} must be a positive number of seconds, got {value}")
    if not args.update_manifest:
        return None
    weight_id = str(WeightId.of(args.name, args.tag))
    limited = any(v is not None for v in (args.limit_train, args.limit_val, args.limit_test))
    check_installable(weight_id, install_target, limited=limited,
                      size=_size_estimate(args.name), default=args.default)
    return install_target


def run_cli(args) -> int:
    """Train; every expected failure (settings, the run's files, its data) is one line and exit
    code 2, without a traceback unless --debug; a run stopped by --time-limit exits 3."""
    try:
        return _run(args)
    except TrainingStopped as e:
        print(f"{args.name}: {e}", file=sys.stderr)
        return 3
    except EXPECTED_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


def _run(args) -> int:
    get_entry(args.name)  # an unknown name: its suggestions before anything else
    target = _precheck(args, target_for(args.into_package, args.manifest,
                                        size=_size_estimate(args.name))
                       if args.update_manifest else None)
    speed = Speed(data_on_device=args.data_on_device, compile=args.compile,
                  benchmark=args.cudnn_benchmark, checkpoint_every_s=args.checkpoint_every,
                  stop_at=time.time() + args.time_limit if args.time_limit else None)
    command = "python -m agcnn_zoo " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    result = train(args.name, dataset=args.dataset, out=args.out, data_dir=args.data_dir,
                   seed=args.seed, limit_train=args.limit_train, limit_val=args.limit_val,
                   limit_test=args.limit_test, tag=args.tag, threads=args.threads,
                   amp=args.amp, channels_last=args.channels_last,
                   validation=not args.no_validation, resume=args.resume,
                   device=args.device, download=args.download, progress=not args.no_progress,
                   command=command, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, optimizer=args.optimizer,
                   momentum=args.momentum, milestones=args.milestones, speed=speed)
    if target is not None and result.record:
        weight_id = install(result.out / "record.json", manifest=target.manifest,
                            default=args.default, package=args.into_package)
        print(f"added {weight_id} to {target.manifest} (weight in {target.folder})")
    return 0
