#!/usr/bin/env python
"""The CIFAR-10 campaign: one prepared call that turns a time budget on a GPU into verified
weights, resumable across calls, nothing lost when a call ends early.

    # on the GPU machine: 9 minutes of training, testing and reproducing what finished
    python eval/campaign.py --out $OUT/cifar --data-dir shared/data --budget 540 --device cuda \\
        [--resume-from runs/cifar] [--names 'allcnnc*,*resnet44*'] [--batch 512] [--gpus 1]
    # here, on a CPU: every CIFAR name end to end for a few steps on a few dozen images
    python eval/campaign.py --smoke --out /tmp/smoke --data-dir ../shared/data
    # here, afterwards: add the finished weights to the repository (hf/agcnn-zoo/, manifest)
    python eval/campaign.py --install runs/cifar

What one call does, in order (every step logged, the state kept in ``OUT/campaign.json``):

1. ``--resume-from DIR`` (the ``OUT`` of an earlier call, carried in): copied into ``OUT``
   (its ``runs/``, ``logs/`` and ``campaign.json``; the rest is rebuilt, so carrying ``runs``
   and ``campaign.json`` is enough: an unfinished run's checkpoint is about three times its
   weight, a finished run keeps its weight and record).
2. The training and test JPEGs are decoded once into the cache (``cifar10-jpeg``).
3. Probe: every name that is not finished is timed for a few training steps on the device
   (``eval/bench_train.py``: images/s and peak memory at the batch it will run with).
4. Plan (:mod:`agcnn_zoo.train.allocate`): runs started in an earlier call first, then the
   cheapest complete recipe first (by the probe; measured on the 2-core CPU here the order is
   resnet44, allcnnc, af_p4_allcnnc, p4_allcnnc, p4m_resnet44, p4m_allcnnc, af_p4m_allcnnc,
   af_p4m_resnet44, a_p4m_resnet44; by operations counted, the p4 and p4m ones pair up).
   A recipe that does not fit in the time left is shortened
   (:mod:`agcnn_zoo.train.budget`: fewer epochs, milestones scaled, recorded as shortened); the
   names after it wait for the next call. On a GPU new runs use ``--batch`` (512 by default)
   with the learning rate scaled linearly; the record lists the change.
5. Each run is ``python -m agcnn_zoo train NAME --dataset cifar10-jpeg --resume ...`` in its own
   process (``torchrun`` with ``--gpus N``), bf16 autocast, channels_last, data resident on the
   GPU, cuDNN autotuning; a checkpoint at least every ``--checkpoint-every`` seconds (90),
   inside epochs too; at its time limit it checkpoints and stops (exit 3), and a later call
   with ``--resume-from`` continues it from that step.
6. Every finished weight (tested once on the CIFAR-10 test JPEGs by its run, its
   ``record.json`` beside it) is installed into ``OUT/hf/agcnn-zoo/`` and
   ``OUT/weights_manifest.json`` (the repository's manifest plus these records, hosts of kind
   ``checkout``), and the reproduce harness re-measures all of them on the device
   (``agcnn_zoo reproduce --device cuda``, results in ``OUT/reproduce.json`` and in that
   manifest). A finished run's ``checkpoint.safetensors`` is then removed (``--keep-checkpoints`` keeps
   it) so that ``OUT`` stays small enough to carry into the next call.

``--budget`` is the wall time of the whole call in seconds; ``--reserve`` of it is kept for
step 6. Exit status: 0 when every planned run finished or stopped at its time limit and every
finished weight was reproduced, 1 otherwise (see ``OUT/campaign.json``).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STATE = "campaign.json"
#: the 2-core CPU's order of complete-recipe cost (eval/bench_train.py); the probe decides on a GPU
CPU_ORDER = ("resnet44_cifar", "allcnnc_cifar", "af_p4_allcnnc_cifar", "p4_allcnnc_cifar",
             "p4m_resnet44_cifar", "p4m_allcnnc_cifar", "af_p4m_allcnnc_cifar",
             "af_p4m_resnet44_cifar", "a_p4m_resnet44_cifar")
#: --smoke: (batch, training, validation and test images, epochs) per name pattern: one step
#: an epoch on the same few images, lr scaled linearly to the batch (the recipe's 0.05 at 128
#: diverges at batch 4); full alpha everywhere trains at about one image a minute on 2 cores
SMOKE = {"a_*": (2, 2, 2, 2, 2), "*p4m_resnet44*": (4, 4, 2, 4, 3), "*": (8, 8, 4, 8, 4)}


def log(msg: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- state

def load_state(out: Path) -> dict:
    path = out / STATE
    return json.loads(path.read_text()) if path.is_file() else {"version": 1, "plans": {},
                                                                  "calls": []}


def save_state(out: Path, state: dict) -> None:
    from agcnn_zoo.io import atomic_write_bytes
    atomic_write_bytes(out / STATE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def run_dir(out: Path, weight_id: str) -> Path:
    return out / "runs" / weight_id


def finished(out: Path, weight_id: str) -> bool:
    return (run_dir(out, weight_id) / "record.json").is_file()


def epochs_done(out: Path, weight_id: str) -> int:
    """Whole epochs a run has checkpointed (metrics.jsonl has one line per epoch)."""
    path = run_dir(out, weight_id) / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


# ----------------------------------------------------------------------------- steps

#: what a call rebuilds from the runs, so a carried-in folder need not hold it
DERIVED = ("hf", "weights_manifest.json", "reproduce.json", "reproduce.md")


def copy_resume(src: Path, out: Path) -> None:
    """An earlier call's folder into ``out`` (files ``out`` already has are kept; what the call
    rebuilds, :data:`DERIVED`, is not copied)."""
    if not (src / STATE).is_file():
        raise SystemExit(f"error: --resume-from {src}: no {STATE} there (not a campaign folder); "
                         f"give the OUT folder of an earlier call")
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = out / rel
        if (path.is_dir() or target.exists() or path.name.endswith(".part")
                or rel.parts[0] in DERIVED):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    log(f"resumed from {src}")


def probe(names: List[str], batches: Dict[str, int], device: str, out: Path, threads: int,
          max_seconds: float) -> Dict[str, dict]:
    """Training rate per name on the device (one process; CPU names each in a fresh one)."""
    results = {}
    for batch in sorted(set(batches[n] for n in names)):
        group = [n for n in names if batches[n] == batch]
        json_path = out / f"probe-b{batch}.json"
        cmd = [sys.executable, str(REPO / "eval" / "bench_train.py"), "--models", ",".join(group),
               "--batch", str(batch), "--small", "", "--device", "cuda" if device.startswith("cuda")
               else "cpu", "--threads", str(threads), "--steps", "3", "--no-flops",
               "--max-seconds", str(max_seconds), "--json", str(json_path)]
        log(f"probe at batch {batch}: {', '.join(group)}")
        subprocess.run(cmd, check=False)
        if json_path.is_file():
            for r in json.loads(json_path.read_text()):
                results[r["model"]] = r
    return results


def train_command(name: str, recipe, args, weight_id: str, time_limit: float) -> List[str]:
    cuda = args.device.startswith("cuda")
    head = [sys.executable, "-m", "agcnn_zoo"]
    if args.gpus > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={args.gpus}", "-m", "agcnn_zoo"]
    cmd = head + ["train", name, "--dataset", "cifar10-jpeg", "--data-dir", str(args.data_dir),
                  "--out", str(run_dir(args.out, weight_id)), "--tag", args.tag, "--seed",
                  str(args.seed), "--resume", "--no-progress", "--device", args.device,
                  "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size),
                  "--lr", repr(recipe.lr), "--milestones", ",".join(map(str, recipe.milestones)),
                  "--checkpoint-every", str(args.checkpoint_every),
                  "--time-limit", str(max(time_limit, 1.0))]
    if cuda:
        cmd += ["--amp", "bf16", "--channels-last", "--data-on-device", "--cudnn-benchmark"]
        cmd += ["--compile"] if args.compile else []
    else:
        cmd += ["--threads", str(args.threads)]
    if args.smoke:
        _, n_train, n_val, n_test, _ = smoke_setting(name)
        cmd += ["--limit-train", str(n_train), "--limit-val", str(n_val),
                "--limit-test", str(n_test)]
    return cmd


def smoke_setting(name: str):
    return next(v for pat, v in SMOKE.items() if fnmatch.fnmatchcase(name, pat))


def run_one(name: str, recipe, args, weight_id: str, time_limit: float) -> str:
    """'finished', 'stopped' (time limit, resumable) or 'failed: ...'."""
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    log_path = args.out / "logs" / f"{weight_id}.log"
    cmd = train_command(name, recipe, args, weight_id, time_limit)
    log(f"{weight_id}: {recipe.epochs} epochs, batch {recipe.batch_size}, lr {recipe.lr:g}, "
        f"milestones {list(recipe.milestones)}, time limit {time_limit:.0f} s (log {log_path})")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    with open(log_path, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        try:  # the run stops itself at its limit; the grace covers the final test and writes
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                timeout=time_limit + args.grace).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if finished(args.out, weight_id):
        return "finished"
    if rc == 3:
        return "stopped"
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    return f"failed (exit {rc}): {tail[0][:300]}"


def install_all(args, ids: List[str]) -> List[str]:
    """Finished weights into ``OUT/hf/agcnn-zoo`` and ``OUT/weights_manifest.json``; returns
    the ids installed."""
    from agcnn_zoo.train import install
    manifest = args.out / "weights_manifest.json"
    if not manifest.is_file():
        shutil.copyfile(REPO / "weights_manifest.json", manifest)
    done = []
    for wid in ids:
        try:
            install(run_dir(args.out, wid) / "record.json", manifest, package=True,
                    allow_limited=args.smoke, default=needs_default(manifest, wid))
            done.append(wid)
        except ValueError as e:
            log(f"{wid}: not installed: {e}")
    return done


def needs_default(manifest: Path, weight_id: str) -> bool:
    """Whether ``weight_id`` becomes its name's default: the name has no authors' weight and no
    other default (a re-installed id keeps its role either way)."""
    from agcnn_zoo.hub.manifest import load_manifest
    name = weight_id.split(".", 1)[0]
    weights = load_manifest(manifest)["weights"]
    return name not in weights and not any(
        r.get("default") for k, r in weights.items() if k.split(".", 1)[0] == name)


def reproduce(args, ids: List[str]) -> int:
    cmd = [sys.executable, "-m", "agcnn_zoo", "reproduce", "--manifest",
           str(args.out / "weights_manifest.json"), "--models", ",".join(ids), "--dataset",
           "cifar10-jpeg", "--data-dir", str(args.data_dir), "--device",
           "cuda" if args.device.startswith("cuda") else "cpu", "--json",
           str(args.out / "reproduce.json"), "--markdown", str(args.out / "reproduce.md"),
           "--no-download", "--quiet"]
    cmd += ["--limit", "2"] if args.smoke else ["--update-manifest"]
    log(f"reproduce harness on {len(ids)} weight(s)")
    return subprocess.run(cmd, env=dict(os.environ), cwd=REPO).returncode


def smoke_checks(args, ids: List[str], installed: List[str]) -> List[str]:
    """What --smoke promises: the loss fell, a record was written, the weight loads (through
    the scratch manifest; a weight no repository host can hold, over 12 MiB, from its file)."""
    import agcnn_zoo as zoo
    from safetensors.torch import load_file
    problems = []
    for wid in ids:
        d = run_dir(args.out, wid)
        if not (d / "record.json").is_file():
            problems.append(f"{wid}: no record.json")
            continue
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        if not rows[-1]["train_loss"] < rows[0]["train_loss"]:
            problems.append(f"{wid}: training loss did not fall ({rows[0]['train_loss']:.4f} -> "
                            f"{rows[-1]['train_loss']:.4f})")
        try:
            if wid in installed:
                zoo.create_model(wid, pretrained=True, manifest=args.out / "weights_manifest.json")
            else:
                zoo.create_model(wid.split(".", 1)[0]).load_state_dict(
                    load_file(str(d / f"{wid}.safetensors")), strict=True)
                log(f"{wid}: loads from its file; not installed (see above)")
        except Exception as e:  # report every failure, not just the first
            problems.append(f"{wid}: does not load: {type(e).__name__}: {e}")
    return problems


def remove_finished_checkpoints(args, ids: List[str]) -> None:
    if args.keep_checkpoints:
        return
    for wid in ids:
        ckpt = run_dir(args.out, wid) / "checkpoint.safetensors"
        if ckpt.is_file() and finished(args.out, wid):
            ckpt.unlink()


# ----------------------------------------------------------------------------- the call

def campaign(args) -> int:
    t0 = time.time()
    deadline = t0 + (args.budget if not args.smoke else 10 ** 7)  # a smoke run has no budget
    args.out.mkdir(parents=True, exist_ok=True)
    if args.resume_from:
        copy_resume(args.resume_from, args.out)
    state = load_state(args.out)
    if state.get("tag", args.tag) != args.tag or state.get("seed", args.seed) != args.seed:
        raise SystemExit(f"error: {args.out} holds a campaign of tag {state['tag']} seed "
                         f"{state['seed']}; use the same --tag and --seed, or another --out")
    state.update(tag=args.tag, seed=args.seed)
    os.environ["AGCNN_ZOO_HF_CLONE"] = str(args.out / "hf" / "agcnn-zoo")
    call = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": args.budget,
            "device": args.device, "runs": {}}
    state["calls"].append(call)

    from agcnn_zoo import list_models
    from agcnn_zoo.data.cifar10_jpeg import decoded_cifar10_jpeg
    from agcnn_zoo.train.allocate import allocate
    from agcnn_zoo.train.recipes import recipe_for
    names = [n for n in list_models("*_cifar")
             if any(fnmatch.fnmatchcase(n, p) for p in args.names.split(","))]
    names.sort(key=lambda n: CPU_ORDER.index(n) if n in CPU_ORDER else len(CPU_ORDER))
    ids = {n: f"{n}.{args.tag}" for n in names}
    for split in ("train", "test"):  # once per machine; every run reads the cache
        decoded_cifar10_jpeg(args.data_dir, split, progress=False)
    log(f"data decoded ({time.time() - t0:.0f} s)")

    todo = [n for n in names if not finished(args.out, ids[n])]
    frozen = {}
    for n in todo:
        if ids[n] in state["plans"]:
            frozen[n] = (recipe_for(n).overridden(**state["plans"][ids[n]]["recipe"]),
                         epochs_done(args.out, ids[n]))
    if args.smoke:
        plans = []
        for n in todo:
            batch, _, _, _, epochs = smoke_setting(n)
            base = recipe_for(n)
            r = frozen[n][0] if n in frozen else base.overridden(
                epochs=epochs, batch_size=batch, lr=base.lr * batch / base.batch_size)
            plans.append((n, r, max(deadline - time.time(), 1.0)))
        later = []
    else:
        cuda = args.device.startswith("cuda")
        batches = {n: frozen[n][0].batch_size if n in frozen else
                   (args.batch if cuda else recipe_for(n).batch_size) for n in todo}
        rates = {}
        if todo:
            found = probe(todo, batches, args.device, args.out, args.threads, args.probe_seconds)
            call["probe"] = found
            rates = {n: r["images_per_s"] for n, r in found.items() if "images_per_s" in r}
            for n in todo:
                if n not in rates:
                    log(f"{n}: no rate measured ({found.get(n, {}).get('error', 'probe failed')});"
                        f" left out of this call")
        left = deadline - time.time() - args.reserve
        chosen, later = allocate(rates, left, batch=args.batch if cuda else None,
                                 frozen={n: v for n, v in frozen.items() if n in rates},
                                 min_epochs=args.min_epochs)
        plans = [(p.name, p.recipe, p.seconds) for p in chosen]
        for p in chosen:
            log(f"plan: {p.name} {'resumed' if p.resumed else 'new'}, "
                f"{'complete' if p.complete else 'shortened'} recipe, {p.recipe.epochs} epochs, "
                f"about {p.seconds:.0f} s at {rates[p.name]:.0f} img/s")
        for n in later:
            log(f"plan: {n} waits for a later call")
    save_state(args.out, state)

    for name, recipe, seconds in plans:
        wid = ids[name]
        limit = min(seconds * 1.25, deadline - time.time() - args.reserve)
        if limit < 10 and not args.smoke:
            call["runs"][wid] = "not started: no time left"
            continue
        state["plans"][wid] = {"recipe": {"epochs": recipe.epochs, "batch_size": recipe.batch_size,
                                          "lr": recipe.lr, "milestones": list(recipe.milestones)}}
        save_state(args.out, state)  # before the run: its checkpoint holds this recipe
        call["runs"][wid] = run_one(name, recipe, args, wid, limit)
        log(f"{wid}: {call['runs'][wid]}")
        save_state(args.out, state)

    done = [ids[n] for n in names if finished(args.out, ids[n])]
    installed = install_all(args, done) if done else []
    rc = 0
    if installed:
        call["reproduce_exit"] = reproduce(args, installed)
        rc = 1 if call["reproduce_exit"] not in (0,) else 0
    if args.smoke:
        problems = smoke_checks(args, [ids[n] for n in names], installed)
        call["smoke_problems"] = problems
        for p in problems:
            log(f"smoke: {p}")
        rc = rc or int(bool(problems))
    remove_finished_checkpoints(args, done)
    failed = [w for w, s in call["runs"].items() if s.startswith("failed")]
    rc = rc or int(bool(failed))
    call["ended"] = time.strftime("%Y-%m-%d %H:%M:%S")
    call["finished"] = done
    save_state(args.out, state)
    log(f"done in {time.time() - t0:.0f} s: {len(done)} finished weight(s) {done}; "
        f"{len(later)} waiting; {len(failed)} failed")
    if later or any(s == "stopped" for s in call["runs"].values()):
        log(f"next call: carry {args.out} in and pass --resume-from <its path>")
    return rc


def install_here(folder: Path, manifest: Optional[Path]) -> int:
    """A campaign folder's finished weights into this repository."""
    from agcnn_zoo.hub.manifest import load_manifest, manifest_path as default_manifest_path
    from agcnn_zoo.hub.manifest import save_manifest
    from agcnn_zoo.train import install
    measured = {}
    out_manifest = folder / "weights_manifest.json"
    if out_manifest.is_file():
        measured = {k: r.get("accuracy", {}).get("measured", [])
                    for k, r in load_manifest(out_manifest)["weights"].items()}
    n = 0
    for record in sorted(folder.glob("runs/*/record.json")):
        wid = record.parent.name
        try:
            wid = install(record, manifest, package=True, default=needs_default(
                manifest or default_manifest_path(), wid))
        except ValueError as e:
            print(f"skipped {record.parent.name}: {e}")
            continue
        if measured.get(wid):
            data = load_manifest(manifest)
            data["weights"][wid]["accuracy"]["measured"] = measured[wid]
            save_manifest(data, manifest)
        print(f"installed {wid}")
        n += 1
    print(f"{n} weight(s) installed; check `git status hf/` and the manifest, then commit")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="the campaign folder (state, runs, weights, logs)")
    p.add_argument("--data-dir", type=Path, help="folder holding cifar10/train_jpeg and test_jpeg")
    p.add_argument("--budget", type=float, default=540.0,
                   help="wall seconds of the whole call (default 540: a device command runs 10 "
                        "minutes at most; one is left for start-up and copying back)")
    p.add_argument("--reserve", type=float, default=120.0,
                   help="seconds kept for installing and reproducing the finished weights")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    p.add_argument("--gpus", type=int, default=1, help="processes per run (torchrun, nccl)")
    p.add_argument("--batch", type=int, default=512,
                   help="global batch of new runs on a GPU (lr scaled linearly; CPU: the recipe's)")
    p.add_argument("--names", default="*", help="fnmatch patterns over the CIFAR names")
    p.add_argument("--tag", default="zoo_jpeg_s0", help="weight ids are NAME.TAG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume-from", type=Path, help="the OUT folder of an earlier call")
    p.add_argument("--checkpoint-every", type=float, default=90.0,
                   help="seconds between checkpoints (inside epochs too)")
    p.add_argument("--min-epochs", type=int, default=5,
                   help="the fewest epochs a shortened run is started with")
    p.add_argument("--probe-seconds", type=float, default=20.0,
                   help="per name, the longest the probe times it")
    p.add_argument("--grace", type=float, default=120.0,
                   help="seconds a run may overrun its time limit before it is killed")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep finished runs' checkpoint.safetensors (large: optimizer state)")
    p.add_argument("--smoke", action="store_true",
                   help="every CIFAR name on the CPU, a few steps on a few dozen images")
    p.add_argument("--install", type=Path, metavar="FOLDER",
                   help="add a campaign folder's finished weights to this repository and stop")
    p.add_argument("--manifest", type=Path, default=None, help="with --install: the manifest")
    args = p.parse_args(argv)
    if args.install:
        return install_here(args.install, args.manifest)
    if args.out is None or args.data_dir is None:
        p.error("--out and --data-dir are needed (or --install FOLDER)")
    if args.smoke:
        args.device, args.tag = "cpu", "smoke" if args.tag == "zoo_jpeg_s0" else args.tag
    if args.device == "auto":
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.gpus < 1 or args.batch < 1 or args.threads < 1:
        p.error("--gpus, --batch and --threads must be at least 1")
    if args.budget <= args.reserve and not args.smoke:
        p.error(f"--budget {args.budget:g} leaves nothing after --reserve {args.reserve:g}")
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve()
    return campaign(args)


if __name__ == "__main__":
    sys.exit(main())
