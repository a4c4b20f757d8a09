"""`counteranimal init RUN --preset NAME`: write a run directory's config.yaml."""
from __future__ import annotations

from pathlib import Path

from curation import atomic, config, presets
from curation.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("init", help="create a run directory with a config.yaml",
                       description="Create RUN/config.yaml from a preset, ready to edit.")
    p.add_argument("run", help="run directory to create")
    p.add_argument("--preset", default="counteranimal", choices=sorted(presets.PRESETS),
                   help="settings to start from (default: %(default)s, the paper's protocol)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.yaml")
    p.set_defaults(func=run)


def run(args) -> int:
    if Path(args.run).exists() and not Path(args.run).is_dir():
        raise UserError("is a file; init creates a run folder at this path, so choose another one", where=args.run)
    path = Path(args.run) / "config.yaml"
    if path.exists() and not args.force:
        raise UserError("already exists; pass --force to overwrite it", where=str(path))
    cfg = presets.build(args.preset)
    atomic.write_text(path, f"# counteranimal run config (preset: {args.preset})\n" + config.dump(cfg))
    print(f"wrote {path}: {len(cfg.classes)} classes, {len(cfg.backgrounds)} backgrounds, "
          f"model {cfg.models[0].model_id}. Set source.path, then run `counteranimal curate {args.run}`.")
    return 0
