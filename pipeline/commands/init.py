"""`counteranimal init RUN [--preset NAME | --world OUT]`: write a run directory's config.yaml."""
from __future__ import annotations

from pathlib import Path

from curation import atomic, config, presets
from curation.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("init", help="create a run directory with a config.yaml",
                       description="Create RUN/config.yaml from a preset, or for curating a planted world's "
                                   "candidate pool with its trained reference model, ready to edit.")
    p.add_argument("run", help="run directory to create")
    p.add_argument("--preset", default="counteranimal", choices=sorted(presets.PRESETS),
                   help="settings to start from (default: %(default)s, the paper's protocol)")
    p.add_argument("--world", metavar="OUT", help="a built and trained planted world (`counteranimal world`): "
                   "its classes, backgrounds, prompts and reference model, the pool's URL list as RUN/urls.csv")
    p.add_argument("--background-model", metavar="NAME", help="with --world: a second model trained for the world "
                   "(`counteranimal world train OUT --name NAME ...`) assigns the backgrounds; the reference model "
                   "alone still decides the pairs")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.yaml")
    p.set_defaults(func=run)


def run(args) -> int:
    if Path(args.run).exists() and not Path(args.run).is_dir():
        raise UserError("is a file; init creates a run folder at this path, so choose another one", where=args.run)
    path = Path(args.run) / "config.yaml"
    if path.exists() and not args.force:
        raise UserError("already exists; pass --force to overwrite it", where=str(path))
    if args.world:
        return _init_world(args, path)
    if args.background_model:
        raise UserError("--background-model names a planted world's second model; use it with --world OUT")
    cfg = presets.build(args.preset)
    atomic.write_text(path, f"# counteranimal run config (preset: {args.preset})\n" + config.dump(cfg))
    print(f"wrote {path}: {len(cfg.classes)} classes, {len(cfg.backgrounds)} backgrounds, "
          f"model {cfg.models[0].model_id}. Set source.path, then run `counteranimal curate {args.run}`.")
    return 0


def _init_world(args, path: Path) -> int:
    from curation.world import train
    from curation.world.run_config import run_config

    world = Path(args.world)
    if not (world / "world.json").is_file():
        raise UserError("is not a built planted world (no world.json)", where=str(world),
                        hint=f"Build one first: `counteranimal world build {world}`.")
    checkpoint = train.checkpoint_path(world)
    if not checkpoint.is_file():
        raise UserError(f"has no trained reference model ({checkpoint} is missing)", where=str(world),
                        hint=f"Train it first: `counteranimal world train {world}`.")
    background = None
    if args.background_model:
        info = train.model_info(world, args.background_model)
        background = (info["model"], train.checkpoint_path(world, args.background_model).resolve(),
                      args.background_model)
    cfg = run_config(world, train.REFERENCE_MODEL, checkpoint.resolve(), name=Path(args.run).resolve().name,
                     background_model=background)
    atomic.write_text(path, f"# counteranimal run config for the planted world {world}\n" + config.dump(cfg))
    judged = (f"; backgrounds assigned by {args.background_model}, pairs decided by the reference model alone"
              if background else "")
    print(f"wrote {path}: {len(cfg.classes)} classes, {len(cfg.backgrounds)} backgrounds, the world's reference "
          f"model{judged}. Next: serve the pool (`python -m http.server 8000 --bind 127.0.0.1 -d {world / 'pool'}`), then\n"
          f"  counteranimal world urls {world} http://127.0.0.1:8000 {Path(args.run) / 'urls.csv'}\n"
          f"  counteranimal curate {args.run}\n"
          f"  counteranimal world judge {world} {args.run}")
    return 0
