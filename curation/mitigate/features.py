"""Where an open_clip model's projections are, the frozen features before them, and writing them back.

Only the last linear map of each tower is trained (Yang et al. 2023 fine-tune the projection layers
with the encoders frozen), so the encoders run once: their outputs just before the projections are
computed here and every training step works on those tensors. The towers open_clip builds:

| tower | projection | how the feature before it is read |
| --- | --- | --- |
| ViT (`VisionTransformer`) | `visual.proj`, a matrix (x @ P) | `visual.proj` set to None for the forward |
| ResNet (`ModifiedResNet`) | `visual.attnpool.c_proj`, the attention pool's output map | `c_proj` swapped for an identity map |
| timm (`TimmModel`) | `visual.head.proj`, an `nn.Linear` | a forward pre-hook reads its input |
| text (`CLIP`, `CustomTextCLIP`) | `text_projection` (matrix or `nn.Linear`) | set to None / a pre-hook |

Anything else (e.g. a timm tower with an MLP head, or no projection at all) is a UserError that says
which tower it is.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from curation.errors import UserError

FRESH_LOGIT_SCALE = math.log(1 / 0.07)   # CLIP's initial temperature: "a fresh temperature"
MAX_LOGIT_SCALE = math.log(100)          # CLIP's clamp


@dataclass(frozen=True)
class Site:
    """One projection: where it lives and which state_dict entries it owns."""
    tower: str            # image | text
    kind: str             # matrix (x @ P) | linear (F.linear(x, W, b)) | attnpool (ResNet c_proj, linear)
    owner: str            # dotted path of the module holding it ("" = the model)
    attr: str             # attribute on the owner
    keys: tuple[str, ...]   # state_dict keys: (P,) for a matrix, (W,) or (W, b) for a linear


def _module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def _key(owner: str, name: str) -> str:
    return f"{owner}.{name}" if owner else name


def find_sites(model: nn.Module) -> tuple[Site, Site]:
    """The image and the text projection of an open_clip model; UserError when a tower has none we know."""
    return _image_site(model), _text_site(model)


def _linear_site(tower: str, owner: str, attr: str, layer: nn.Linear, kind: str = "linear") -> Site:
    keys = (_key(_key(owner, attr), "weight"),) + ((_key(_key(owner, attr), "bias"),) if layer.bias is not None else ())
    return Site(tower, kind, owner, attr, keys)


def _image_site(model: nn.Module) -> Site:
    visual = getattr(model, "visual", None)
    kind = type(visual).__name__
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        return Site("image", "matrix", "visual", "proj", ("visual.proj",))
    attnpool = getattr(visual, "attnpool", None)
    if attnpool is not None and isinstance(getattr(attnpool, "c_proj", None), nn.Linear):
        return _linear_site("image", "visual.attnpool", "c_proj", attnpool.c_proj, kind="attnpool")
    head = getattr(visual, "head", None)
    if isinstance(head, nn.Module) and isinstance(getattr(head, "proj", None), nn.Linear):
        return _linear_site("image", "visual.head", "proj", head.proj)
    raise UserError(f"cannot find the image projection of this model's {kind} tower: mitigate knows a ViT's "
                    f"visual.proj, a ResNet's visual.attnpool.c_proj and a timm tower's visual.head.proj (linear).",
                    hint="Use an open_clip model with one of those towers (e.g. ViT-B-32, RN50), or a timm tower "
                         "built with timm_proj: linear.")


def _text_site(model: nn.Module) -> Site:
    for owner in ("", "text"):
        holder = getattr(model, owner, None) if owner else model
        proj = getattr(holder, "text_projection", None) if holder is not None else None
        if isinstance(proj, nn.Parameter):
            return Site("text", "matrix", owner, "text_projection", (_key(owner, "text_projection"),))
        if isinstance(proj, nn.Linear):
            return _linear_site("text", owner, "text_projection", proj)
    raise UserError(f"cannot find the text projection of this {type(model).__name__}: mitigate knows "
                    f"text_projection (a matrix or a linear layer) on the model or on model.text.",
                    hint="Use an open_clip model whose text tower ends in a projection (every CLIP config does).")


@contextlib.contextmanager
def _before_projection(model: nn.Module, site: Site) -> Iterator[list]:
    """Within the block, the tower's forward returns (or records) the feature before its projection.

    Yields a list that a pre-hook fills for linear sites; empty otherwise (the forward returns it).
    """
    owner = _module(model, site.owner)
    original = getattr(owner, site.attr)
    captured: list = []
    if site.kind == "matrix":
        setattr(owner, site.attr, None)     # both ViT and the text towers skip a None projection
        try:
            yield captured
        finally:
            setattr(owner, site.attr, original)
    elif site.kind == "attnpool":
        # The pool passes c_proj's weight to multi_head_attention_forward as its output map, so no hook
        # fires; an identity map in its place returns the pooled attention output itself.
        width = original.in_features
        identity = nn.Linear(width, width).to(original.weight.device, original.weight.dtype)
        with torch.no_grad():
            identity.weight.copy_(torch.eye(width))
            identity.bias.zero_()
        setattr(owner, site.attr, identity)
        try:
            yield captured
        finally:
            setattr(owner, site.attr, original)
    else:
        handle = original.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            yield captured
        finally:
            handle.remove()


@torch.no_grad()   # not inference_mode: the features feed autograd later
def image_features(model: nn.Module, site: Site, pixels: torch.Tensor) -> torch.Tensor:
    """Pre-projection image features of a preprocessed batch, float32 on the CPU."""
    with _before_projection(model, site) as captured:
        out = model.encode_image(pixels)
    return (captured[-1] if captured else out).float().cpu()


@torch.no_grad()   # not inference_mode: the features feed autograd later
def text_features(model: nn.Module, site: Site, tokens: torch.Tensor) -> torch.Tensor:
    """Pre-projection text features of tokenised prompts, float32 on the CPU."""
    with _before_projection(model, site) as captured:
        out = model.encode_text(tokens)
    return (captured[-1] if captured else out).float().cpu()


class Projection(nn.Module):
    """A trainable copy of one projection, applied as the model applies it."""

    def __init__(self, model: nn.Module, site: Site):
        super().__init__()
        self.site = site
        state = model.state_dict()
        self.weight = nn.Parameter(state[site.keys[0]].detach().float().clone())
        self.bias = nn.Parameter(state[site.keys[1]].detach().float().clone()) if len(site.keys) > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.site.kind == "matrix":
            return x @ self.weight
        return F.linear(x, self.weight, self.bias)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {self.site.keys[0]: self.weight.detach()}
        if self.bias is not None:
            out[self.site.keys[1]] = self.bias.detach()
        return out


class Projections(nn.Module):
    """What mitigate trains: the image and text projections and a fresh temperature (log scale)."""

    def __init__(self, model: nn.Module, sites: tuple[Site, Site] | None = None, fresh_scale: bool = True):
        super().__init__()
        image_site, text_site = sites or find_sites(model)
        self.image = Projection(model, image_site)
        self.text = Projection(model, text_site)
        start = FRESH_LOGIT_SCALE if fresh_scale else float(model.logit_scale.detach().reshape(-1)[0])
        self.logit_scale = nn.Parameter(torch.tensor(float(start)))

    def embed_images(self, pre: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(pre), dim=-1)

    def embed_texts(self, pre: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(pre), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp()

    def clamp_(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def state_dict_with(model: nn.Module, projections: Projections) -> dict[str, torch.Tensor]:
    """The model's full state_dict with the trained projections and temperature written back."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    updates = {**projections.image.tensors(), **projections.text.tensors()}
    for key, value in updates.items():
        state[key] = value.to(state[key].dtype).reshape(state[key].shape).clone()
    state["logit_scale"] = projections.logit_scale.detach().clamp(0, MAX_LOGIT_SCALE).to(
        state["logit_scale"].dtype).reshape(state["logit_scale"].shape).clone()
    return state


def trained_keys(sites: tuple[Site, Site]) -> set[str]:
    """Every state_dict entry mitigate may change."""
    return {k for s in sites for k in s.keys} | {"logit_scale"}
