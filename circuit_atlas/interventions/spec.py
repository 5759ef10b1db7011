"""What an intervention names: features, supernodes, positions, and the value to set.

    Feature(layer, position, index)      one transcoder feature at one token position
    Supernode(name, features, children)  a group of features (and of other supernodes)
    Intervention(subject, ...)           set the subject to `value`, or scale it by `scale`

A subject is a Feature, a Supernode, or a bare (layer, index) pair that then needs a
`position`: an int (negative counts from the end of the prompt), a slice (`slice(5, None)`
is open-ended and also covers tokens generated later), or "all". `value` is an absolute
activation; `scale` multiplies the feature's current activation (x0 ablates, x-2 inverts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

Position = int | slice | str


class Feature(NamedTuple):
    layer: int
    position: int
    index: int

    @property
    def id(self) -> str:
        """Our typed node id (the same as Graph.ids uses)."""
        return f"feat:{self.layer}:{self.position}:{self.index}"


@dataclass
class Supernode:
    """A named group of features; `features` is None for nodes that are not features (e.g. embeddings)."""

    name: str
    features: list[Feature] | None = None
    children: list[Supernode] = field(default_factory=list)

    def all_features(self) -> list[Feature]:
        """Own features and those of every descendant, each once, in first-seen order."""
        seen: dict[Feature, None] = {}
        for f in self.features or []:
            seen.setdefault(Feature(*f), None)
        for child in self.children:
            for f in child.all_features():
                seen.setdefault(f, None)
        return list(seen)


@dataclass
class Intervention:
    """Set (`value`) or scale (`scale`) a feature, a supernode, or (layer, index) at `position`."""

    subject: Feature | Supernode | tuple[int, int]
    value: float | None = None
    scale: float | None = None
    position: Position | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.scale is None):
            raise ValueError("an intervention needs exactly one of value= (absolute) or scale= (multiple of current)")
        if isinstance(self.subject, (Feature, Supernode)):
            if self.position is not None:
                raise ValueError(
                    "a Feature or Supernode carries its own positions; give position= only with a "
                    "(layer, index) subject"
                )
        elif isinstance(self.subject, tuple) and len(self.subject) == 2:
            if self.position is None:
                raise ValueError(
                    f"intervention on (layer, index) {self.subject} needs position= (an int, a slice or 'all')"
                )
            if isinstance(self.position, str) and self.position != "all":
                raise ValueError(f"position {self.position!r} is not understood; use an int, a slice or 'all'")
        else:
            raise ValueError(
                f"intervention subject {self.subject!r} is not a Feature, a Supernode or a (layer, index) pair"
            )


def set_to(subject, value: float, position: Position | None = None) -> Intervention:
    return Intervention(subject, value=value, position=position)


def scale_by(subject, factor: float, position: Position | None = None) -> Intervention:
    return Intervention(subject, scale=factor, position=position)
