"""The names of the compliance packs: the data files in ``controller/packs`` (``<name>.yaml``).

The set of packs ``governance.compliance`` and a QuantumPolicy's ``packs`` accept comes from those
files and from nowhere else: adding a pack is adding a file. The rules inside them are read by
``controller.engine.packs``; this module only lists the names, so the API types stay plain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

PACKS_DIR = Path(__file__).resolve().parent.parent / "packs"
PACK_SUFFIX = ".yaml"
PACK_NAMES: tuple[str, ...] = tuple(sorted(p.name.removesuffix(PACK_SUFFIX) for p in PACKS_DIR.glob(f"*{PACK_SUFFIX}")))


def known_pack(name: str) -> str:
    if name not in PACK_NAMES:
        choices = ", ".join(repr(n) for n in PACK_NAMES)
        raise ValueError(f"unknown compliance pack {name[:64]!r}: one of {choices}")
    return name


PackName = Annotated[
    str,
    AfterValidator(known_pack),
    WithJsonSchema({"type": "string", "enum": list(PACK_NAMES)}),
]
