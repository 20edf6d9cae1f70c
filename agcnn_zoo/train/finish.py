"""The end of a run: the selected weight (verified against the digest taken when it was
chosen), the test set touched once by it, the weight file, its manifest record and the curves."""
from __future__ import annotations

import json

from ..hub.convert import save_safetensors
from ..io import atomic_write_bytes
from . import record as zrecord
from .checkpoint import CHECKPOINT, verify_best
from .distributed import barrier
from .loop import evaluate

__all__ = ["RECORD", "CURVES", "finish"]

RECORD = "record.json"
CURVES = "curves.png"


def finish(run, best: dict, rank_hashes) -> "tuple[dict, float]":
    """Write the outputs of ``run`` (an ``engine._Run``) for the weight ``best``; returns the
    record (empty on ranks other than 0) and the test accuracy."""
    verify_best(best, run.out / CHECKPOINT)
    s, data = run.settings, run.data
    run.model.load_state_dict(best["state"])
    test = data.load_test().limited(s.limit_test)
    test_top1, test_loss, test_n = evaluate(run.model, test, s, run.device)
    rec = {}
    if run.rank == 0:
        weight = run.out / f"{s.weight_id}.safetensors"
        sha = save_safetensors({k: v.contiguous() for k, v in best["state"].items()}, weight,
                               {"format": "pt", "agcnn_zoo.model": s.name,
                                "agcnn_zoo.architecture": run.entry.model_class,
                                "agcnn_zoo.trained": "agcnn-zoo"})
        rec = zrecord.build_record(
            entry=run.entry, recipe=run.recipe, settings=s, data=data, weight=weight, sha256=sha,
            num_params=sum(p.numel() for p in run.model.parameters()), best=best,
            metrics=run.metrics, test={"dataset": data.test_name, "top1": test_top1,
                                       "loss": test_loss, "images": test_n},
            device=run.device, world=run.world, wall_s=run.wall(), command=run.command)
        rec["training"]["rank_state_sha256"] = rank_hashes
        rec["training"]["weight_state_sha256"] = best["sha256"]
        atomic_write_bytes(run.out / RECORD, (json.dumps(rec, indent=2) + "\n").encode())
        zrecord.plot_curves(run.metrics, run.out / CURVES, title=s.weight_id)
        chosen = (f"selected epoch {best['epoch']} (val {best['top1']:.2f}%)" if data.val is not None
                  else f"last epoch {best['epoch']} (no validation)")
        print(f"{s.weight_id}: {chosen}, {data.test_name} test {test_top1:.2f}% on {test_n} "
              f"images; wrote {weight}", flush=True)
    barrier()
    return rec, test_top1
