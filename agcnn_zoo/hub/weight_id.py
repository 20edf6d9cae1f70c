"""A weight's identity: ``NAME`` or ``NAME.TAG`` (timm's convention), parsed and composed here
and nowhere else.

``NAME`` is a registered model name; ``TAG`` tells apart several weights of one model (the
authors' checkpoints are untagged, weights trained by this project carry a tag such as
``rotgen12k_s0``). Which weight an untagged name means is the catalogue's rule
(:mod:`agcnn_zoo.hub.catalogue`), not this type's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

__all__ = ["WeightId", "WEIGHT_ID", "TAG"]

#: the text of a weight id; a tag is lower-case so that ids compare as they read
WEIGHT_ID = re.compile(r"^(?P<model>[A-Za-z0-9_-]+)(\.(?P<tag>[a-z0-9_-]+))?$")
TAG = re.compile(r"^[a-z0-9_-]+$")


@dataclass(frozen=True, order=True)
class WeightId:
    """``model`` (a registry name) and ``tag`` (None for the untagged weight)."""
    model: str
    tag: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.model, str) or not WEIGHT_ID.match(self.model) or "." in self.model:
            raise ValueError(f"{self.model!r} is not a model name (letters, digits, '_' and '-')")
        if self.tag is not None and not TAG.match(str(self.tag)):
            raise ValueError(f"tag {self.tag!r}: a tag is lower-case letters, digits, '_' and '-'")

    @classmethod
    def parse(cls, text: Union[str, "WeightId"]) -> "WeightId":
        """``"NAME.TAG"`` -> ``WeightId("NAME", "TAG")``; ``"NAME"`` -> ``WeightId("NAME")``."""
        if isinstance(text, WeightId):
            return text
        m = WEIGHT_ID.match(str(text))
        if m is None:
            raise ValueError(f"{text!r} is not a weight id: NAME or NAME.TAG (NAME a model name, "
                             f"TAG lower-case letters, digits, '_' and '-')")
        return cls(m.group("model"), m.group("tag"))

    @classmethod
    def of(cls, model: str, tag: Optional[str] = None) -> "WeightId":
        """The id of ``model``'s weight ``tag`` (empty tag: the untagged weight)."""
        return cls(model, tag or None)

    @staticmethod
    def model_of(text: Union[str, "WeightId"]) -> str:
        """The model name of a weight id (``"NAME.TAG"`` -> ``"NAME"``)."""
        return WeightId.parse(text).model

    @staticmethod
    def is_valid(text: str) -> bool:
        return isinstance(text, str) and WEIGHT_ID.match(text) is not None

    def __str__(self) -> str:
        return self.model if self.tag is None else f"{self.model}.{self.tag}"
