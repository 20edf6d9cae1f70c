"""The repository's ``hf/agcnn-zoo/`` folder, laid out as the Hugging Face repository its weights
are published to (see :mod:`.publish`): ``<weight id>.safetensors`` flat, ``cards/<weight id>.md``
one model card each, ``README.md`` the index (with the Hub's metadata header).

Weights there are the manifest's records with a ``checkout`` host (:mod:`.hosts.checkout`);
:func:`write_cards` rewrites the cards and the index from those records, so the folder always
says what it holds. ``python -m agcnn_zoo publish --repo-id ORG/agcnn-zoo`` uploads them as they
are (and every other published weight beside them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from ..io.files import atomic_write_bytes
from .publish import index_card, model_card

__all__ = ["in_checkout", "write_cards", "readme"]

_ABOUT = """
## This folder

`hf/agcnn-zoo/` of the agcnn-zoo repository holds the weights over the package's 512 KB limit
(the CIFAR-10 weights trained by agcnn-zoo, 5-11 MB each, at most 12 MiB), laid out as the
Hugging Face repository they are published to. The manifest (`weights_manifest.json`) lists each
with a host of kind `checkout`, which reads it from here in a git clone or a torch.hub checkout,
checked by sha256 and size on every load like any other host. An installed wheel does not carry
this folder: set `AGCNN_ZOO_HF_CLONE` to a clone of the Hugging Face repository, or let the next
host (Hugging Face, once published) deliver the file.

Written by `agcnn_zoo.train.record.install` (`python eval/campaign.py --install RUNS`); do not
edit by hand.
"""


def in_checkout(records: Dict[str, dict]) -> Dict[str, dict]:
    """The records whose first host is the checkout folder."""
    return {k: r for k, r in sorted(records.items())
            if r.get("hosts") and r["hosts"][0].get("type") == "checkout"}


def readme(records: Dict[str, dict]) -> str:
    mine = in_checkout(records)
    text = index_card("agcnn-zoo", list(mine), mine)
    if not mine:
        text += "\n(No weight yet: the CIFAR-10 weights need a GPU; see the repository's README.)\n"
    return text + _ABOUT


def write_cards(folder: Path, records: Dict[str, dict]) -> None:
    """``cards/<id>.md`` for every weight in the folder, and ``README.md`` (atomic writes)."""
    folder = Path(folder)
    for name, rec in in_checkout(records).items():
        atomic_write_bytes(folder / "cards" / f"{name}.md", model_card(name, rec).encode())
    atomic_write_bytes(folder / "README.md", readme(records).encode())
