"""pipeline/demo.py's settings agree with themselves: the world it builds through the CLI is the one its
stale-world check compares against (else every `make demo` would rebuild the world, or never would).
The journey itself is what `make demo` runs (bench/RESULTS.md, "make demo")."""
from __future__ import annotations

from curation.world import spec
from curation.world.assets import load_manifest
from pipeline import demo
from pipeline.cli import build_parser


def test_the_demo_world_built_by_the_cli_is_the_one_its_rebuild_check_expects():
    args = build_parser().parse_args(["world", "build", "OUT", "--size", demo.SIZE, *demo.WORLD_OPTIONS,
                                      "--seed", str(demo.SEED)])
    built = spec.preset(args.size, seed=args.seed, n_classes=args.n_classes, n_control=args.n_control)
    expected = spec.preset(demo.SIZE, seed=demo.SEED, **demo.WORLD_OVERRIDES)
    assert built.to_json() == expected.to_json()
    resolved = expected.validate(load_manifest(check_files=False))
    plant = spec.draw_plant(resolved)
    assert len(resolved.classes) == 6 and sum(p.biased for p in plant.values()) == 4
    # Groups of MIN_GROUP_SIZE must be reachable on a biased class's rarer backgrounds.
    rare = resolved.pool_per_class * (1 - resolved.pool_common_share) / (len(resolved.backgrounds) - 1)
    assert rare >= demo.MIN_GROUP_SIZE
