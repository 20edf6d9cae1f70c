"""Command line (``agcnn-zoo`` once installed, or ``python -m agcnn_zoo``): ``list | info NAME |
download NAME | verify | convert | publish | results | reproduce | train | attention``."""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional

from . import hub
from ._version import __version__
from .api import list_models, list_pretrained, model_info, resolve_weight
from .command_errors import EXPECTED_ERRORS, guarded  # noqa: F401  (eval/reproduce.py's import)
from .hub import WeightsUnavailableError
from .hub.convert import convert_checkpoint
from .hub.catalogue import catalogue
from .hub.publish import publish
from .hub.weight_id import WeightId
from .io import env
from .io.errors import IntegrityError
from .registry import get_entry, list_registered
from .results import results_table, seed_table, write_readme

#: subcommands whose arguments and handler live in their own module, imported only when the
#: subcommand is used (``--help`` stays light: drawing imports torchvision): name -> (module,
#: the line ``--help`` shows). The module's ``add_command(parser)`` adds the arguments and sets
#: ``fn``; an optional ``check_arguments(parser, args)`` runs after parsing.
MODULE_COMMANDS = {
    "reproduce": ("agcnn_zoo.reproduce.runner", "re-measure every published weight on its test "
                  "set (the main job; eval/reproduce.py)"),
    "train": ("agcnn_zoo.train.cli", "train a model from its paper recipe (validation split, "
              "resumable, torchrun for data-parallel)"),
    "attention": ("agcnn_zoo.attention_plot", "draw the attention maps a model applies to an "
                  "image (needs matplotlib)"),
}


def _command_module(name: str):
    """The module of a subcommand of ``MODULE_COMMANDS`` (the one place they are resolved)."""
    return importlib.import_module(MODULE_COMMANDS[name][0])


def _cmd_list(args) -> int:
    cat = catalogue()
    for name in list_models(args.pattern, pretrained=args.pretrained):
        default_id = cat.default_of(name)
        cells = []
        for i, rec in cat.weights_of(name).items():
            who = "ours" if rec.get("origin", {}).get("kind") == "trained" else "authors'"
            cells.append(f"{i} ({who}{', default' if i == default_id else ''})")
        print(f"{name:28s} {'; '.join(cells)}".rstrip())
    return 0


def _cmd_info(args) -> int:
    print(json.dumps(model_info(args.name), indent=2, default=str))
    return 0


def _unknown(name: str) -> Optional[str]:
    """None when ``name`` is a registered model or a weight id, else an error line with the
    nearest names."""
    known = set(list_registered()) | set(list_pretrained())
    if name in known:
        return None
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see `list --pretrained`"
    return f"{name}: unknown model or weight id; {hint}"


def _not_hosted(name: str, error: Exception) -> Optional[str]:
    """One line for a weight that no configured host can deliver while the network is off (a
    mirror without its file, or offline): not a failure of that weight."""
    if not (isinstance(error, WeightsUnavailableError) and error.not_hosted_here):
        return None
    where = f"the mirror {env.mirror()}" if env.mirror() is not None else "offline mode"
    return f"{name:28s} NOT AVAILABLE from the configured hosts ({where} has no copy)"


def _fetch_verified(hub, weight_id: str, record: dict, progress: bool):
    """The weight's local file after reading it as a load does (size, sha256, safetensors): a
    bad cached copy is removed by that check and fetched once more; a second failure raises."""
    for attempt in (1, 2):
        path = hub.fetch_weights(weight_id, record, progress=progress)
        try:
            hub.load_state_dict(weight_id, record, progress=progress)
            return path
        except IntegrityError:
            if attempt == 2:
                raise


def _cmd_download(args) -> int:
    names = list_pretrained() if args.all else args.names
    if not names:
        print("nothing to download: name models or pass --all", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        unknown = _unknown(name)
        if unknown:
            failed += 1
            print(unknown, file=sys.stderr)
            continue
        try:
            weight_id, record = resolve_weight(name)
            if record is None:
                raise hub.NoPretrainedWeightsError(f"{name!r} has no published weights (list them: "
                                        f"`list --pretrained`)")
            path = _fetch_verified(hub, weight_id, record, progress=not args.quiet)
            print(f"{name}: {path}")
        except Exception as e:  # report every model, then fail
            line = _not_hosted(name, e)
            if line:
                print(line)
                continue
            failed += 1
            print(f"{name}: FAILED: {e}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_verify(args) -> int:
    """Fetch (from cache when present) and verify every published weight; recompute parameter
    counts against the manifest."""
    names = args.names or list_pretrained()
    bad = 0
    for name in names:
        unknown = _unknown(name)
        if unknown:
            print(unknown, file=sys.stderr)
            bad += 1
            continue
        name, rec = resolve_weight(name)
        if rec is None:
            print(f"{name:28s} NO WEIGHTS")
            bad += 1
            continue
        problems = []
        n = sum(p.numel() for p in get_entry(WeightId.model_of(name)).fn().parameters())
        if n != rec["num_params"]:
            problems.append(f"num_params {n} != manifest {rec['num_params']}")
        try:
            hub.load_state_dict(name, rec)
        except Exception as e:
            line = _not_hosted(name, e)
            if line and not problems:
                print(line)
                continue
            problems.append(str(e))
        print(f"{name:28s} {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}")
        bad += bool(problems)
    return 1 if bad else 0


def _cmd_convert(args) -> int:
    sha = convert_checkpoint(args.src, args.dst, args.model)
    print(f"{args.dst}: sha256 {sha}")
    return 0


def _cmd_publish(args) -> int:
    revision = publish(args.repo_id, manifest_path=args.manifest, token=args.token,
                       endpoint=args.endpoint, files_dir=args.files_dir, names=args.name or None)
    print(f"published to {args.repo_id} at revision {revision}")
    return 0


def _cmd_results(args) -> int:
    on = args.measured_on or ("mnist-rot-aux" if args.dataset == "rotmnist" else args.dataset)
    table = results_table(args.dataset, on)
    seeds = seed_table(on) if args.dataset == "rotmnist" else None
    if args.write_readme:
        changed = write_readme(Path(args.write_readme), table, seeds)
        print(f"{args.write_readme}: {'updated' if changed else 'already up to date'}")
    else:
        print(table + ("\n" + seeds if seeds else ""), end="")
    return 0


def program_name(argv0: Optional[str] = None) -> str:
    """What the user typed: the console script's name, else ``python -m agcnn_zoo``."""
    name = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).name
    return "agcnn-zoo" if name in ("agcnn-zoo", "agcnn-zoo.exe") else "python -m agcnn_zoo"


def build_parser(prog: Optional[str] = None,
                 commands: Optional[Iterable[str]] = None) -> argparse.ArgumentParser:
    """The parser; the subcommands of ``MODULE_COMMANDS`` named in ``commands`` (default: all)
    get their arguments, the others only their line in ``--help``."""
    prog = prog or program_name()
    commands = set(MODULE_COMMANDS if commands is None else commands)
    p = argparse.ArgumentParser(prog=prog,
                                description="Attentive group-equivariant CNNs with verified weights.")
    p.add_argument("--version", action="version", version=f"agcnn-zoo {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error (default: one line saying what to do)")
    p.set_defaults(prog=prog)
    sub = p.add_subparsers(dest="command", required=True)
    _add_builtin_commands(sub)
    for name, (_, help_line) in MODULE_COMMANDS.items():
        s = sub.add_parser(name, help=help_line)
        if name in commands:
            _command_module(name).add_command(s)
    return p


def _add_builtin_commands(sub) -> None:
    s = sub.add_parser("list", help="list registered models")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. '*p4cnn*'")
    s.add_argument("--pretrained", action="store_true", help="only models with published weights "
                   "(each weight id is listed: NAME or NAME.TAG, whose it is, which is the default)")
    s.set_defaults(fn=_cmd_list)
    s = sub.add_parser("info", help="architecture, parameters, preprocessing and weights of a model")
    s.add_argument("name")
    s.set_defaults(fn=_cmd_info)
    s = sub.add_parser("download", help="fetch and verify weights into the cache")
    s.add_argument("names", nargs="*")
    s.add_argument("--all", action="store_true", help="every published weight")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=_cmd_download)
    s = sub.add_parser("verify", help="verify published weights (sha256, size, parameter counts)")
    s.add_argument("names", nargs="*")
    s.set_defaults(fn=_cmd_verify)
    s = sub.add_parser("convert", help="convert an authors' checkpoint to our safetensors")
    s.add_argument("--model", required=True, help="registry name, e.g. p4cnn_rotmnist")
    s.add_argument("src", help="the authors' model.pth")
    s.add_argument("dst", help="output .safetensors")
    s.set_defaults(fn=_cmd_convert)
    s = sub.add_parser("publish", help="upload weights and model cards to the Hugging Face hub")
    s.add_argument("--repo-id", required=True, help="ORG/NAME")
    s.add_argument("--manifest", default=None, help="manifest to update (default: the package's)")
    s.add_argument("--token", default=None)
    s.add_argument("--endpoint", default=None, help="hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    s.add_argument("--name", action="append", help="publish only this weight (repeatable)")
    s.add_argument("--files-dir", default=None, help="folder with ready safetensors files")
    s.set_defaults(fn=_cmd_publish)
    s = sub.add_parser("results", help="the results table (paper, authors' log, measured) from the manifest")
    s.add_argument("--dataset", default="rotmnist", help="rotmnist, cifar10 or pcam")
    s.add_argument("--measured-on", default=None, help="evaluation set of the 'measured' column "
                   "(default: mnist-rot-aux for rotmnist, else the canonical set)")
    s.add_argument("--write-readme", metavar="README", help="rewrite the table block of this README")
    s.set_defaults(fn=_cmd_results)


def _command_in(argv: List[str]) -> Optional[str]:
    """The subcommand ``argv`` names: its first word that is not an option (the top-level
    options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(commands=[command] if command in MODULE_COMMANDS else [])
    args = parser.parse_args(argv)
    if args.command in MODULE_COMMANDS:
        check = getattr(_command_module(args.command), "check_arguments", None)
        if check is not None:
            check(parser, args)
        args.argv = argv[argv.index(args.command) + 1:]
    return guarded(lambda: args.fn(args), debug=getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
