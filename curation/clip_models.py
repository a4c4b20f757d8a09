"""Loading a CLIP model is one function: `load(name, pretrained, device=, precision=)`.

Everything goes through open_clip's own factory, `create_model_and_transforms(name,
pretrained=tag_or_file)`, so real weights (an open_clip tag such as ``laion400m_e31`` or a
checkpoint file) and the small models trained here take the same path. Our own named configs
live in ``curation/model_configs/`` and are registered with open_clip on import.

Hub downloads are off unless COUNTERANIMAL_ALLOW_DOWNLOAD=1: with no hub reachable, open_clip
would retry for about a minute; we check the local caches first and fail in milliseconds with
a message that names the missing file instead.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from curation.errors import UserError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)
# More config folders (os.pathsep-separated), read on import. A worker process on this machine
# inherits the variable; a remote worker has neither it nor the folders, so jobs carry the configs
# themselves (extra_model_configs on the launcher, register_model_configs on the worker).
EXTRA_CONFIG_DIRS_ENV = "COUNTERANIMAL_MODEL_CONFIG_DIRS"


def _extra_config_dirs() -> list[Path]:
    return [Path(d) for d in os.environ.get(EXTRA_CONFIG_DIRS_ENV, "").split(os.pathsep) if d and Path(d).is_dir()]


for _extra in _extra_config_dirs():
    open_clip.add_model_config(_extra)


def extra_model_configs() -> dict[str, str]:
    """The JSON text of every model config in COUNTERANIMAL_MODEL_CONFIG_DIRS here, by model name."""
    return {f.stem: f.read_text() for d in _extra_config_dirs() for f in sorted(d.glob("*.json"))}


def register_model_configs(configs: dict[str, str]) -> None:
    """Make configs carried from the launcher known to open_clip in this process (a worker), by its
    own add_model_config on a folder of their files. Names open_clip already knows are left alone."""
    missing = {name: text for name, text in configs.items() if name not in open_clip.list_models()}
    if not missing:
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="counteranimal-model-configs-"))
    for name, text in missing.items():
        (folder / f"{name}.json").write_text(text)
    open_clip.add_model_config(folder)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class ClipModel:
    model: Any                 # open_clip.CLIP, eval mode, on `device`
    preprocess: Any            # torchvision transform for one PIL image
    tokenizer: Any
    name: str
    pretrained: str | None
    device: str
    precision: str

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]


def downloads_allowed() -> bool:
    return os.environ.get("COUNTERANIMAL_ALLOW_DOWNLOAD", "") not in ("", "0", "false", "no")


def is_checkpoint_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES) or Path(pretrained).exists()


def check(name: str, pretrained: str | None = None, device: str = "cpu", precision: str = "fp32") -> str | None:
    """Validate a model request before any work starts; return the weights file to load, if local.

    Raises UserError for an unknown model name, a missing checkpoint file, an unknown tag,
    weights that are not on disk (when downloads are off), a device that is not there, or a
    precision the device cannot run.
    """
    schema = _schema(name)
    if schema:
        _check_device(device, precision)
        return _check_schema_model(schema, name[len(schema) + 1:], pretrained)
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else " `python -c 'import open_clip; print(open_clip.list_models())'` lists them."
        raise UserError(f"open_clip has no model named {name!r}.{hint}")
    _check_device(device, precision)
    if not pretrained:
        return None
    if is_checkpoint_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise UserError(f"checkpoint file {str(path)!r} does not exist (model {name}).",
                            hint="Pass an existing open_clip checkpoint file or an open_clip pretrained tag.")
        problem = unreadable_checkpoint(path)
        if problem:
            raise UserError(f"pretrained {pretrained!r} is not a readable torch checkpoint ({problem}).",
                            hint="Pass the checkpoint file itself (a .pt/.bin/.safetensors file saved by open_clip "
                                 "or torch), or an open_clip tag.")
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise UserError(f"open_clip has no pretrained tag {pretrained!r} for {name}; "
                        f"known tags: {', '.join(tags) or 'none'}. A checkpoint file path also works.")
    cached = cached_weights(name, pretrained)
    if cached is None and not downloads_allowed():
        raise UserError(f"the weights for {name} pretrained={pretrained} are not on this machine: "
                        f"expected {describe_source(name, pretrained)}.",
                        hint="Copy that file here and pass its path as pretrained (e.g. --pretrained "
                             "/path/to/open_clip_pytorch_model.bin), or put it in the Hugging Face cache "
                             "(HF_HOME), or set COUNTERANIMAL_ALLOW_DOWNLOAD=1 where a hub is reachable.")
    return cached


SCHEMAS = ("hf-hub", "local-dir")
HF_CONFIG = "open_clip_config.json"
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")   # open_clip's order


def _schema(name: str) -> str | None:
    for schema in SCHEMAS:
        if name.startswith(schema + ":"):
            return schema
    return None


def _check_schema_model(schema: str, ident: str, pretrained: str | None) -> str | None:
    """`hf-hub:org/repo` and `local-dir:/path`: the config and weights come with the name.

    open_clip loads them itself, and when the weights are missing it only warns and goes on with
    random ones, so both files are required here, before any work starts.
    """
    if not ident:
        raise UserError(f"model name {schema + ':'!r} names no {'repository' if schema == 'hf-hub' else 'folder'}.")
    if pretrained:
        raise UserError(f"model {schema}:{ident} carries its own weights; pretrained={pretrained!r} would be ignored.",
                        hint="Leave pretrained out (--pretrained none) for hf-hub: and local-dir: names.")
    if schema == "local-dir":
        folder = Path(ident).expanduser()
        if not folder.is_dir():
            raise UserError(f"local-dir: folder {str(folder)!r} does not exist.",
                            hint=f"It must hold {HF_CONFIG} (with model_cfg) and the weights (e.g. {HF_WEIGHTS[1]}).")
        if not (folder / HF_CONFIG).is_file():
            raise UserError(f"local-dir: folder {str(folder)!r} has no {HF_CONFIG}.")
        weights = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(ext))
        if not weights:
            raise UserError(f"local-dir: folder {str(folder)!r} has no weights file (*.safetensors, *.bin, *.pth); "
                            "open_clip would load random weights.")
        return None
    from huggingface_hub import try_to_load_from_cache

    have_config = isinstance(try_to_load_from_cache(ident, HF_CONFIG), str)
    have_weights = any(isinstance(try_to_load_from_cache(ident, f), str) for f in HF_WEIGHTS)
    if not (have_config and have_weights) and not downloads_allowed():
        missing = [HF_CONFIG] * (not have_config) + [" or ".join(HF_WEIGHTS)] * (not have_weights)
        raise UserError(f"the Hugging Face repo {ident} is not in the local cache: {' and '.join(missing)} missing.",
                        hint="Put the repo's files in the Hugging Face cache (HF_HOME / HF_HUB_CACHE), or download "
                             "them into a folder and use local-dir:/that/folder, or set "
                             "COUNTERANIMAL_ALLOW_DOWNLOAD=1 where a hub is reachable.")
    return None


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch intra-op threads (None: as they are), then restore the count.

    The count is process-wide, and it changes a forward's last bits (summation order), so work that
    sets its own (training, the oracle) must not leave it to the stages that run after it.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load(name: str, pretrained: str | None = None, *, device: str = "cpu", precision: str = "fp32") -> ClipModel:
    """Load an open_clip model by config name and pretrained tag or checkpoint file."""
    local = check(name, pretrained, device, precision)
    import huggingface_hub.constants as hf_constants

    was_offline = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = was_offline or not downloads_allowed()
    if not pretrained:   # random weights were asked for: open_clip's warning about them is noise
        logging.getLogger().addFilter(_random_init_filter)
    from_file = bool(pretrained) and is_checkpoint_path(pretrained)
    # Tags trained with QuickGELU (openai, laion400m_*) give wrong features without it.
    quick_gelu = bool(pretrained and not from_file and open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=local if from_file else pretrained, force_quick_gelu=quick_gelu,
            device=device, precision="pure_" + precision if precision != "fp32" else "fp32")
    except (RuntimeError, FileNotFoundError, KeyError, ValueError, OSError, IndexError, EOFError,
            pickle.UnpicklingError) as exc:   # torch.load on a file that is not a checkpoint raises the last three
        raise UserError(f"could not load {name} with pretrained={pretrained!r}: {exc}") from None
    finally:
        hf_constants.HF_HUB_OFFLINE = was_offline
        logging.getLogger().removeFilter(_random_init_filter)
    model.eval()
    return ClipModel(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name), name=name,
                     pretrained=pretrained, device=device, precision=precision)


def _random_init_filter(record: logging.LogRecord) -> bool:
    return "No pretrained weights loaded" not in record.getMessage()


def cached_weights(name: str, tag: str) -> str | None:
    """The local file open_clip would load for (name, tag), or None when it is not cached."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if "file" in cfg:
        return cfg["file"] if Path(cfg["file"]).is_file() else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        filename = filename or "open_clip_pytorch_model.bin"
        for candidate in (filename.replace(".bin", ".safetensors"), filename):
            found = try_to_load_from_cache(repo, candidate)
            if isinstance(found, str) and Path(found).is_file():
                return found
        return None
    url = cfg.get("url", "")
    if url:
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        return str(path) if path.is_file() else None
    return None


def describe_source(name: str, tag: str) -> str:
    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = (hub.rstrip("/"), "open_clip_pytorch_model.bin") if hub.endswith("/") else os.path.split(hub)
        return f"{filename} from the Hugging Face repo {repo}"
    return f"{os.path.basename(cfg.get('url', '?'))} in ~/.cache/clip (from {cfg.get('url', '?')})"


def _check_device(device: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}.")
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for, but torch sees no CUDA GPU on this machine; use device: cpu.")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} was asked for, but MPS is not available here; use device: cpu.")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps.")
    if kind == "cpu" and precision == "fp16":
        raise UserError("fp16 needs a GPU; on the CPU use fp32 or bf16.")


def unreadable_checkpoint(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint, or None when it opens (or cannot be checked cheaply).

    Memory-mapped, so no weights are read: a file that is not a torch checkpoint (a truncated
    download, the wrong file) is named before any worker tries to load it.
    """
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        head = f.read(4)
    if path.suffix != ".safetensors" and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return f"it starts with {head!r}, neither a torch zip archive nor a pickle"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt"):
                return None
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a bad file)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "mmap" in text:    # an old (non-zip) torch file: it cannot be opened without reading it all
            return None
        return text[:200]
    return None
