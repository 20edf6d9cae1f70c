"""Publish the verified weights and their model cards to a Hugging Face model repo, then pin the
new revision in the manifest.

One repo holds every weight, flat: ``<file>.safetensors`` per model, ``cards/<name>.md`` (one
model card each) and a ``README.md`` index. Every file is checked against the manifest (sha256,
size) and loaded strictly into its model before anything is uploaded; after the commit each
published record gets ``{"type": "huggingface", "repo_id", "revision": <commit oid>,
"filename"}`` as its first download host, behind the files shipped in the package or kept in
the repository's ``hf/agcnn-zoo/`` folder (which need no network, so they stay first); an older
host on the same repo is replaced, hosts on other repos and the original URL stay behind it as
fallbacks, and the manifest is saved. ``hf/agcnn-zoo/`` is laid out as this repo (weights,
``cards/``, ``README.md``), so its weights publish unchanged.

    python -m agcnn_zoo publish --repo-id ORG/NAME [--manifest PATH] [--endpoint URL]
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

from ..io import env
from ..io.files import sha256_bytes
from ..registry import get_entry
from . import fetch as hub
from .cache import cached_weights_path
from .hosts import LOCAL_KINDS
from .hosts.original import derive
from .manifest import load_manifest, manifest_path as default_manifest_path, save_manifest
from .weight_id import WeightId

__all__ = ["publish", "model_card", "index_card", "huggingface_host"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_PAPER = "Romero, Bekkers, Tomczak and Hoogendoorn, Attentive Group Equivariant Convolutional " \
         "Networks, ICML 2020 (arXiv 2002.03830)"


def huggingface_host(repo_id: str, revision: str, filename: str) -> dict:
    return {"type": "huggingface", "repo_id": repo_id, "revision": revision, "filename": filename}


# ----------------------------------------------------------------------------- model cards

def _fmt_top1(value) -> str:
    return "not reported" if value is None else f"{value:g}%"


def _bullets(mapping: dict) -> List[str]:
    return [f"- **{k}**: {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in mapping.items()]


def _provenance(record: dict) -> str:
    """Whose weight this is: the authors' (converted), or one this project trained, and how."""
    training = record.get("training")
    if not training:
        return ("The authors' weights, converted key for key to safetensors by agcnn-zoo "
                "(no retraining).")
    if training.get("val_top1") is None:  # the fixed-schedule protocol
        chosen = "no validation split, the weight after the last epoch (nothing selected)"
    else:
        chosen = (f"weight selected on a validation split (epoch {training['selected_epoch']}, "
                  f"{training['val_top1']:.2f}%)")
    return (f"Trained by agcnn-zoo (not the authors' weights) on {training['dataset']} with the "
            f"authors' recipe: {training['epochs_run']} of {training['recipe_epochs']} recipe "
            f"epochs, seed {training['seed']}, {chosen}, test set touched once.")


def _accuracy_lines(acc: dict) -> List[str]:
    """The card's accuracy table: paper, the authors' log, every measurement of ours."""
    paper, ckpt = acc.get("paper", {}), acc.get("checkpoint", {})
    lines = [
        "## Accuracy (top-1 on the test split)",
        "",
        "| source | top-1 | details |",
        "|---|---|---|",
        f"| paper | {_fmt_top1(paper.get('top1'))}"
        f"{'' if paper.get('confirmed') else ' (unconfirmed)'} | {paper.get('source', '')} |",
        f"| authors' log for this file | {_fmt_top1(ckpt.get('top1'))} | "
        f"{ckpt.get('source', '')} |",
    ]
    measured = acc.get("measured") or []
    for m in measured:
        lines.append(f"| measured (agcnn-zoo) | {_fmt_top1(m.get('top1'))} | {m.get('dataset')}, "
                     f"{m.get('images')} images, {m.get('device')}, {m.get('date')} |")
    if not measured:
        lines.append("| measured (agcnn-zoo) | not yet | `eval/reproduce.py` |")
    return lines


def model_card(name: str, record: dict, repo_id: Optional[str] = None) -> str:
    """Markdown model card of one weight, from its manifest record alone."""
    origin_class = record.get("original_class")
    lines = [
        f"# {name}",
        "",
        f"{record['architecture']} (class `{origin_class}` in the authors' code) trained on "
        f"**{record.get('dataset', '?')}**, from {_PAPER}. {_provenance(record)}",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {record['architecture']} (original: `{origin_class}`) |",
        f"| parameters | {record['num_params']:,} |",
        f"| file | `{record['file']}` |",
        f"| sha256 | `{record.get('sha256')}` |",
        f"| size | {record.get('size')} bytes |",
        "",
        "## Usage",
        "",
        "```python",
        "import agcnn_zoo",
        f"model = agcnn_zoo.create_model({name!r}, pretrained=True)  # verified, eval mode",
        "```",
        "",
    ]
    if repo_id:
        lines += [f"The file is `{record['file']}` in `{repo_id}`; agcnn-zoo pins the revision "
                  "and checks sha256 and size on every load.", ""]
    lines += ["## Preprocessing", ""] + _bullets(record.get("preprocessing", {})) + [""]
    lines += _accuracy_lines(record.get("accuracy", {}))
    lines += ["", "## Origin", ""] + _bullets(record.get("origin", {}))
    lines += ["", "## Licence", ""] + _bullets(record.get("license", {}))
    notes = record.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def index_card(repo_id: str, names: Iterable[str], records: dict) -> str:
    """The repo's README.md: Hub metadata and one line per weight."""
    lines = [
        "---",
        "license: mit",
        "library_name: pytorch",
        "tags:",
        "- image-classification",
        "- group-equivariant",
        "- attention",
        "- agcnn-zoo",
        "---",
        "",
        f"# {repo_id}",
        "",
        f"Verified weights of attentive group-equivariant CNNs ({_PAPER}): the authors' "
        "published checkpoints converted by agcnn-zoo, and weights agcnn-zoo trained itself "
        "(each card says which, and how). Load them with "
        "`agcnn_zoo.create_model(name, pretrained=True)`.",
        "",
        "| model | architecture | dataset | authors' top-1 | file | card |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        r = records[name]
        lines.append(f"| {name} | {r['architecture']} | {r.get('dataset', '?')} | "
                     f"{_fmt_top1(r.get('accuracy', {}).get('checkpoint', {}).get('top1'))} | "
                     f"`{r['file']}` | [card](cards/{name}.md) |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- building

def _verified_file(name: str, record: dict, files_dir: Optional[Path], progress: bool) -> Path:
    """A verified safetensors file of ``name``: from ``files_dir`` when it holds one, else
    fetched (cache first). An unpinned record gets its sha256/size filled in from the file
    fetched through its git-blob-verified source."""
    if files_dir is not None and (files_dir / record["file"]).is_file():
        path = files_dir / record["file"]
        if not record.get("sha256"):
            raise ValueError(f"{name}: the manifest pins no sha256, so {path} cannot be checked; "
                             f"remove it to build the file from the verified original")
        hub.verify_file(path, record["sha256"], record.get("size"))
        return path
    if not record.get("sha256"):
        # derived from its source, verified by git blob id just now (nothing cached is trusted)
        rec = hub.resolve_record(name, record)
        path, data = derive(rec, None, cached_weights_path(rec), progress=progress)
        record["sha256"], record["size"] = sha256_bytes(data), len(data)
    else:
        path = hub.fetch_weights(name, record, progress=progress)
    hub.verify_file(path, record["sha256"], record.get("size"))
    return path


def _check_loads(name: str, path: Path) -> None:
    from safetensors.torch import load_file
    model = get_entry(WeightId.model_of(name)).fn()
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{name}: {path} does not load into {type(model).__name__}: {e}") from e


# ----------------------------------------------------------------------------- publish

def _selected(records: dict, names: Optional[Iterable[str]], path: Path) -> List[str]:
    selected = sorted(records) if names is None else list(names)
    unknown = [n for n in selected if n not in records]
    if unknown:
        raise ValueError(f"not in the manifest {path}: {', '.join(unknown)}")
    if not selected:
        raise ValueError("nothing to publish")
    return selected


def _stage(staging: Path, repo_id: str, selected: List[str], records: dict,
           files_dir: Optional[Path], progress: bool, log: Callable[[str], None]) -> list:
    """Copy each verified weight that loads, its card and the index into ``staging``; the
    commit operations adding them."""
    from huggingface_hub import CommitOperationAdd

    (staging / "cards").mkdir()
    operations = []
    for name in selected:
        record = records[name]
        src = _verified_file(name, record, files_dir, progress)
        _check_loads(name, src)
        shutil.copyfile(src, staging / record["file"])
        hub.verify_file(staging / record["file"], record["sha256"], record.get("size"))
        (staging / "cards" / f"{name}.md").write_text(model_card(name, record, repo_id),
                                                      encoding="utf-8")
        operations += [CommitOperationAdd(record["file"], str(staging / record["file"])),
                       CommitOperationAdd(f"cards/{name}.md",
                                          str(staging / "cards" / f"{name}.md"))]
        log(f"  {name}: {record['file']} sha256 {record['sha256'][:16]}... verified")
    (staging / "README.md").write_text(index_card(repo_id, selected, records), encoding="utf-8")
    operations.append(CommitOperationAdd("README.md", str(staging / "README.md")))
    return operations


def _commit(repo_id: str, operations: list, n: int, endpoint: Optional[str],
            token: Optional[str], commit_message: Optional[str],
            log: Callable[[str], None]) -> str:
    """Create the repo if needed, commit ``operations`` in one commit; its 40-hex revision."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "the Hugging Face Hub"
    log(f"uploading {n} weights and their cards to {repo_id} on {where}")
    api.create_repo(repo_id, repo_type="model", exist_ok=True)
    info = api.create_commit(repo_id, operations=operations, repo_type="model",
                             commit_message=commit_message or
                             f"agcnn-zoo: {n} verified weights")
    revision = str(info.oid)
    if not _HEX40.match(revision):
        raise RuntimeError(f"the hub answered a commit id that is not 40 hex digits: {revision!r}")
    return revision


def _pin(records: dict, selected: List[str], repo_id: str, revision: str) -> None:
    """Each record's hosts: local kinds first, then ``repo_id`` at ``revision`` (replacing an
    older host on the same repo), then the others as fallbacks."""
    for name in selected:
        record = records[name]
        others = [h for h in record["hosts"]
                  if not (h.get("type") == "huggingface" and h.get("repo_id") == repo_id)]
        embedded = [h for h in others if h.get("type") in LOCAL_KINDS]
        others = [h for h in others if h.get("type") not in LOCAL_KINDS]
        record["hosts"] = embedded + [huggingface_host(repo_id, revision, record["file"])] + others


def publish(repo_id: str, manifest_path: Optional[Union[str, Path]] = None,
            token: Optional[str] = None, endpoint: Optional[str] = None,
            files_dir: Optional[Union[str, Path]] = None, *, names: Optional[Iterable[str]] = None,
            commit_message: Optional[str] = None, progress: bool = True,
            log: Callable[[str], None] = print) -> str:
    """Upload every published weight of the manifest (or ``names``) with its model card to the
    Hugging Face model repo ``repo_id`` (created if needed) in one commit, pin the commit in
    the manifest, save it, and return the commit's revision (40 hex digits).

    ``endpoint`` defaults to ``HF_ENDPOINT`` (read now) or the public Hub; ``token`` to
    huggingface_hub's usual lookup. ``files_dir`` may hold ready ``<file>.safetensors`` files
    (checked against the manifest like any other)."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like ORG/NAME, got {repo_id!r}")
    path = Path(manifest_path) if manifest_path else default_manifest_path()
    data = load_manifest(path)
    records = data["weights"]
    selected = _selected(records, names, path)
    files_dir = Path(files_dir) if files_dir else None
    endpoint = (endpoint or env.hf_endpoint() or "").rstrip("/") or None
    with tempfile.TemporaryDirectory(prefix="agcnn_zoo_publish_") as staging:
        operations = _stage(Path(staging), repo_id, selected, records, files_dir, progress, log)
        revision = _commit(repo_id, operations, len(selected), endpoint, token, commit_message,
                           log)
    _pin(records, selected, repo_id, revision)
    saved = save_manifest(data, path)
    log(f"published {repo_id}@{revision}; manifest updated: {saved}")
    return revision
