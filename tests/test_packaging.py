"""Packaging as a new user meets it: the CLI starts on the base install, and every package the code
imports is declared in setup.py."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"curation", "pipeline", "annotation", "schemas", "tests", "bench"}
# Absent without the extras, or slow to import (seconds for torch and Beam): a command imports them in
# its handler, so `counteranimal --help` starts on a base install, quickly.
EXTRAS = ["label_studio_sdk"]
HEAVY = ["torch", "torchvision", "open_clip", "apache_beam", "img2dataset", "matplotlib", "jinja2", "scipy",
         "webdataset", "huggingface_hub", "safetensors"]
BLOCKED = EXTRAS + HEAVY
MOVE = "import these inside the command's handler, not at the top of pipeline/commands/<name>.py"

# Runs `counteranimal <args>` with BLOCKED made unimportable, as on an install without them; prints
# the exit status and which of them were imported anyway.
_PROBE = """
import importlib.abc, json, sys
blocked = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
from pipeline import cli
try:
    code = cli.main(json.loads(sys.argv[2]))
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "imported": sorted(m for m in sys.modules if m.split('.')[0] in blocked)}))
"""


def _probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(BLOCKED), json.dumps(list(args))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"stdout": done.stdout}


def test_help_starts_without_the_extras_and_heavy_packages():
    top = _probe("--help")
    assert top["code"] == 0 and top["imported"] == [], (MOVE, top)
    from pipeline import cli
    for name in cli.COMMANDS:
        assert name.replace("_", "-") in top["stdout"], name
    # Every command's own --help too, and an action of annotate's (they live behind label_studio_sdk).
    for args in [[name.replace("_", "-"), "--help"] for name in cli.COMMANDS] + [["annotate", "push", "--help"]]:
        seen = _probe(*args)
        assert seen["code"] == 0 and seen["imported"] == [], (MOVE, args, seen)


def test_a_command_needing_a_missing_extra_names_the_extra():
    """The block is real: annotate, which needs label_studio_sdk, fails when it runs (not at start-up),
    with one paragraph naming the extra to install, exit 2, no traceback."""
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(BLOCKED),
                           json.dumps(["annotate", "status", str(ROOT / "no-such-run")])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1])["code"] == 2, done.stdout + done.stderr
    assert "counteranimal[annotation]" in done.stderr and "Traceback" not in done.stderr, done.stderr


def _imports(folder: Path) -> set[str]:
    """Top-level names of the packages imported anywhere under ``folder``, except imports guarded by
    ``except ModuleNotFoundError`` / ``ImportError`` (a probe for an optional extra is no requirement)."""
    names = set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and any(
                       isinstance(h.type, ast.Name) and h.type.id in ("ModuleNotFoundError", "ImportError")
                       for h in t.handlers)
                   for stmt in t.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in OWN and n != "__future__"}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """setup.py's install_requires and extras_require, as normalised distribution names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    return ({_dist(r) for r in kw["install_requires"]},
            {extra: {_dist(r) for r in reqs} for extra, reqs in kw.get("extras_require", {}).items()})


def _dist(requirement: str) -> str:
    name = requirement
    for sep in "<>=!~;[ ":
        name = name.split(sep)[0]
    return name.lower().replace("_", "-")


def test_every_imported_package_is_declared():
    base, extras = _declared()
    by_module = importlib.metadata.packages_distributions()

    def undeclared(folder: str, allowed: set[str]) -> dict[str, list[str]]:
        out = {}
        for module in sorted(_imports(ROOT / folder)):
            dists = {d.lower().replace("_", "-") for d in by_module.get(module, [])}
            assert dists, f"{folder}/ imports {module}, which no installed distribution provides"
            if not dists & allowed:
                out[module] = sorted(dists)
        return out

    # curation/, schemas/ and pipeline/ run on the base install; annotation/ may use its extra.
    for folder in ("curation", "schemas", "pipeline"):
        assert not undeclared(folder, base), f"{folder}/ imports undeclared packages: {undeclared(folder, base)}"
    allowed = base | extras["annotation"]
    assert not undeclared("annotation", allowed), undeclared("annotation", allowed)
