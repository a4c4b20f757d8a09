"""Class names from a source -> the run's classes, with every unknown name reported at once."""
from __future__ import annotations

from curation.config import ClassSpec, RunConfig
from curation.errors import UserError

SHOW_NAMES = 20   # unknown names listed in full up to this many
SHOW_ROWS = 3     # rows shown for each of the first few unknown names


class ClassResolver:
    def __init__(self, cfg: RunConfig):
        self._lookup = cfg.class_lookup()
        self._index = {c.name: cfg.class_index(c) for c in cfg.classes}
        self.unknown: dict[str, list[str]] = {}   # name -> where it was seen, in input order

    def resolve(self, name: str | None, where: str) -> ClassSpec | None:
        key = (name or "").strip().casefold()
        found = self._lookup.get(key)
        if found is None:
            self.unknown.setdefault((name or "").strip(), []).append(where)
        return found

    def index(self, c: ClassSpec) -> int:
        return self._index[c.name]

    def raise_unknown(self, source: str, what: str = "class names") -> None:
        """One error naming every unknown class (and where the first few appear)."""
        if not self.unknown:
            return
        parts = []
        for i, (name, seen) in enumerate(self.unknown.items()):
            if i >= SHOW_NAMES:
                parts.append(f"and {len(self.unknown) - SHOW_NAMES} more")
                break
            label = repr(name) if name else "(empty)"
            if i < 5:
                rows = ", ".join(seen[:SHOW_ROWS]) + (f", … {len(seen)} in all" if len(seen) > SHOW_ROWS else "")
                label += f" ({rows})"
            parts.append(label)
        raise UserError(f"{len(self.unknown)} unknown {what}: {'; '.join(parts)}", where=source,
                        hint="Add them to `classes` in config.yaml (as a name or a synonym), or fix the source.")
