"""The weight catalogue: which weights exist, which one a name means, and their typed records,
answered from one manifest load.

Every place that turns a user's ``NAME`` or ``NAME.TAG`` into a weight asks the catalogue
(``create_model``, ``model_info``, ``hub.load_state_dict``, ``pretrained_cfg``, timm's
registration, torch.hub's entry points, the CLI, the results table), so they cannot disagree.
The rule for an untagged name: the untagged record if there is one, else the one tagged record
marked ``"default": true``.

:func:`catalogue` builds one per manifest load and keeps it while the files it was read from
(the package manifest and the user manifest) keep their modification time and size. Its records
are shared: read them, never edit them (``load_manifest()`` gives a private copy to edit).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

from .errors import NoPretrainedWeightsError
from .manifest import load_manifest, manifest_path, user_manifest_path
from .records import WeightRecord, parse_record
from .weight_id import WeightId

__all__ = ["Catalogue", "catalogue"]

ManifestLike = Union[None, str, Path, Mapping]


class Catalogue:
    """The weights of one manifest, grouped by model."""

    def __init__(self, weights: Mapping[str, dict], source: str = "the manifest"):
        self.source = source
        self._records = weights
        self._by_model: Dict[str, List[str]] = {}
        for wid in sorted(weights):
            self._by_model.setdefault(WeightId.model_of(wid), []).append(wid)
        self._typed: Dict[str, WeightRecord] = {}

    def ids(self) -> List[str]:
        """Every weight id, sorted."""
        return sorted(self._records)

    def models(self) -> List[str]:
        """The model names with at least one weight, sorted."""
        return sorted(self._by_model)

    def record(self, weight_id: str) -> Optional[dict]:
        """The raw record of exactly ``weight_id`` (no default rule), or None."""
        return self._records.get(str(weight_id))

    def typed(self, weight_id: str) -> Optional[WeightRecord]:
        """The typed, validated record of exactly ``weight_id`` (parsed once), or None."""
        wid = str(weight_id)
        if wid not in self._typed:
            raw = self._records.get(wid)
            if raw is None:
                return None
            self._typed[wid] = parse_record(wid, raw)
        return self._typed[wid]

    def weights_of(self, model: str) -> Dict[str, dict]:
        """``model``'s weights by id (``NAME`` and every ``NAME.TAG``), sorted by id."""
        return {k: self._records[k] for k in self._by_model.get(model, [])}

    def default_of(self, model: str) -> Optional[str]:
        """The id an untagged ``model`` means, or None when it has no default weight."""
        ids = self._by_model.get(model, [])
        if model in ids:
            return model
        marked = [k for k in ids if (self._records[k] or {}).get("default") is True]
        return marked[0] if len(marked) == 1 else None

    def resolve(self, text: Union[str, WeightId]) -> Tuple[str, Optional[dict]]:
        """(weight id, raw record) that ``create_model(text, pretrained=True)`` loads; the record
        is None when there is none (the id is then ``text`` itself)."""
        wid = WeightId.parse(text)
        if wid.tag is None:
            default = self.default_of(wid.model)
            if default is not None:
                return default, self._records[default]
        return str(wid), self._records.get(str(wid))

    def resolve_named(self, text: Union[str, WeightId]) -> Tuple[str, Optional[dict]]:
        """:meth:`resolve`, refusing a ``NAME.TAG`` that has no record (a ``NAME`` without
        weights is no error: its dataset's configuration applies)."""
        weight_id, record = self.resolve(text)
        if record is None and WeightId.parse(text).tag is not None:
            raise NoPretrainedWeightsError(f"no weight {str(text)!r}; {self.missing_hint(text)}")
        return weight_id, record

    def missing_hint(self, text: Union[str, WeightId]) -> str:
        """What to write instead of a weight id that has no record."""
        model = WeightId.model_of(text)
        own = self._by_model.get(model)
        if own:
            return f"weights of {model}: {', '.join(own)}"
        return f"models with weights: {', '.join(self.models()) or 'none'}"


@lru_cache(maxsize=8)
def _cached(key: tuple) -> Catalogue:
    path = key[0] if key[0] != "<default>" else None
    return Catalogue(load_manifest(path).get("weights", {}),
                     source=str(path or manifest_path()))


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None, None)
    return (str(path), st.st_mtime_ns, st.st_size)


def catalogue(manifest: ManifestLike = None) -> Catalogue:
    """The catalogue of the manifest a user sees (package + user manifest), of the manifest file
    ``manifest`` names, or of a manifest dict (the layout of ``weights_manifest.json``)."""
    if isinstance(manifest, Mapping):
        return Catalogue(manifest.get("weights", {}), source="the given manifest")
    if manifest is not None:
        return _cached((str(manifest),) + _stamp(Path(manifest)))
    return _cached(("<default>",) + _stamp(manifest_path()) + _stamp(user_manifest_path()))
