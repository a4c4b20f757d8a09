"""What several subcommands share: the RUN argument, checked before anything reads or writes."""
from __future__ import annotations

from pathlib import Path

from curation import storage
from curation.errors import UserError


def run_folder(arg: str, *, must_exist: bool = True) -> Path:
    """RUN as given on the command line: a folder holding config.yaml, never a file; a local path
    or an object store URL (curation/storage.py)."""
    path = storage.path(arg)
    if path.is_file():
        hint = (f"Pass the folder that holds it: `{path.parent}`." if path.name == "config.yaml"
                else "Pass the run folder that holds config.yaml (create one with `counteranimal init RUN`).")
        raise UserError("is a file, not a run folder.", where=str(path), hint=hint)
    if must_exist and not path.exists():
        raise UserError("no such run folder.", where=str(path),
                        hint="Create one with `counteranimal init RUN --preset counteranimal`.")
    return path
