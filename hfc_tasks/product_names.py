"""Product file names: the plain-name rule, what a classified name holds, quicklooks.

Its own module so that both :mod:`hfc_tasks.products` (names, nights, the archive layout) and
:mod:`hfc_tasks.catalogue.formats` (which declares the file kinds that classify names) use it
without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Quicklooks are images; every other kind of product file (a CSV table) is declared as data in
# formats.yaml's `files` (and a site's formats folder), see hfc_tasks.catalogue.formats.
QUICKLOOK = "quicklook"
QUICKLOOK_SUFFIXES = (".jpg", ".jpeg", ".png")

# A product name is a plain file name: letters, digits and . _ - + only. Anything else
# (a path separator, "..", a space, a shell metacharacter) is refused before it reaches a
# remote path or a shell, so a hostile name in a run folder can never write outside the tree.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ProductNameError(ValueError):
    """A file name that is not a valid HFC product name."""


@dataclass(frozen=True)
class ProductName:
    name: str
    kind: str  # a file kind of the formats' `files`, or QUICKLOOK
    code: str | None = None
    version: str | None = None
    observatory_tag: str | None = None
    stamp: str | None = None  # YYYYMMDD[THHMMSS] from the name, when it has one

    @property
    def year(self) -> str | None:
        return self.stamp[:4] if self.stamp else None


def check_plain_name(name: str) -> str:
    """Return ``name`` if it is a plain file name, else raise naming it."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or ".." in name:
        raise ProductNameError(
            f"refused product name {name!r}: only letters, digits and . _ - + are allowed "
            "(no path separators, '..', spaces or shell characters)"
        )
    return name
