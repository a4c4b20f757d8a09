"""The fine-tuning losses of Yang et al. (ICML 2023), each a function of normalised embeddings.

Notation: z_j the image embeddings of a batch (L2-normalised), y_j their classes, b_j their
backgrounds (the spurious attribute); t_{c,m} the embedding of class c's prompt under template m,
t̄_c = normalise(mean_m t_{c,m}) the class's prompt embedding; a_{b,m} the embedding of background b's
prompt under template m; s = exp(logit scale); u·v a dot product (a cosine, as all are normalised).
For a set S of pairs, mean_S is the mean over S, and a term whose set is empty counts 0.

- ``clip_loss``: CLIP's symmetric contrastive loss with the class prompts as the texts,
      L_CLIP = ½ [ −1/N Σ_j log softmax_c(s z_j·t̄_c)[y_j]
                   − 1/|C_B| Σ_{c∈C_B} mean_{j: y_j=c} log softmax_k(s t̄_c·z_k)[j] ],
  C_B the classes in the batch. Each class prompt is one text, so images of the same class are not
  each other's negatives. (The paper writes L_CLIP over image-caption pairs; the authors' code pairs
  every image with its class prompt and takes arange targets, which makes two images of one class
  negatives of each other. We follow the paper's pairs with class prompts as captions, counted once.)
- ``image_class_loss`` (L_vc): images of the same class pulled together, of other classes pushed apart,
      L_vc = 1/N Σ_j [ −mean_{k∈P_j} z_j·z_k + mean_{k∈N_j} z_j·z_k ],
      P_j = {k ≠ j : y_k = y_j},  N_j = {k : y_k ≠ y_j}.
  The paper's positives are the *other* images of the class. The released code (``similarity_loss``)
  counts the image itself among its positives (a constant that dilutes the term) and divides both
  sums by the batch size instead of |P_j| and |N_j|; here it follows the paper.
- ``language_class_loss`` (L_lc): a class's prompts across templates pulled together, other classes'
  prompts pushed apart, the same form over the C·M prompts p = (c, m):
      L_lc = 1/(CM) Σ_p [ −mean_{q∈P_p} t_p·t_q + mean_{q∈N_p} t_p·t_q ],
      P_p = {(c, m') : m' ≠ m},  N_p = {(c', m') : c' ≠ c}.
  The released code flattens its (templates, classes, d) tensor template-major but labels the rows
  class-major (``repeat_interleave``), so its "positives" are mostly prompts of other classes; the
  labels here follow the flattening (row c·M + m has class c), as the paper defines them.
- ``spurious_image_loss`` (L_vs, when photos carry background labels): the class is set apart from the
  spurious attribute among the images: the same class on *another* background is a positive, *another*
  class on the same background a negative,
      L_vs = 1/N Σ_j [ −mean_{k∈P^s_j} z_j·z_k + mean_{k∈N^s_j} z_j·z_k ],
      P^s_j = {k : y_k = y_j, b_k ≠ b_j},  N^s_j = {k : y_k ≠ y_j, b_k = b_j}.
  (The released code's image loss over the spurious field instead counts images *sharing* the
  attribute as positives, which pulls a background's images together; the paper sets them apart.)
- ``spurious_language_loss`` (L_ls, without background labels): class prompts pushed away from the
  spurious attribute's prompts,
      L_ls = 1/(CM) Σ_{c,m} mean_{b,m'} |t_{c,m}·a_{b,m'}|.
  As in the paper and its code, the absolute cosine: orthogonal, not opposite.
- ``spurious_crossmodal_loss`` (L_xs, off by default): the released code's cross-modal spurious term,
  images pushed away from the spurious attribute's prompts,
      L_xs = 1/N Σ_j mean_{b,m'} |z_j·a_{b,m'}|.
  Not in the issue's list; offered as ``--weights xs=W`` because the authors' code uses it, and
  measured in bench/RESULTS.md ("Mitigation: the released code's cross-modal term").

Sources: the authors' released code (github.com/YuYang0901/CLIP-spurious-finetune, ``losses.py``,
``MultimodalLoss._compute_element_wise``, and ``algorithms/multimodal.py``) was re-read for the
comparisons above (2026-12-02). Further differences of the released code, where we follow the formulas:
  - its L_lc and L_ls row losses are reshaped ``view(num_templates, num_classes).mean(-1)`` and then
    indexed by the batch's class labels, i.e. a per-*template* average picked by a *class* index; here
    every (class, template) prompt counts once;
  - it has a cross-modal spurious term (|cos| between images and attribute prompts; here L_xs, off by
    default) and a cross-modal class term (not implemented: the CLIP loss over class prompts is one).
The paper's own text is still not in the stored corpora (searched again: only its abstract), so the
forms above are our reading of its Section 4; the positive/negative sets of L_vs are ours. Every
formula here is checked term by term against a loop written from it in tests/test_mitigate_losses.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

TERMS = ("clip", "vc", "lc", "vs", "ls", "xs")


def clip_loss(z: torch.Tensor, y: torch.Tensor, class_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L_CLIP over class prompts; z (N, d), y (N,), class_emb (C, d) normalised, scale = exp(logit scale)."""
    logits = scale * z @ class_emb.T                       # (N, C)
    image_to_text = F.cross_entropy(logits, y)
    present = torch.unique(y)
    log_p = torch.log_softmax(logits.T[present], dim=1)    # (|C_B|, N): each present class over the batch
    positive = (y.unsqueeze(0) == present.unsqueeze(1)).float()
    text_to_image = -((log_p * positive).sum(1) / positive.sum(1)).mean()
    return 0.5 * (image_to_text + text_to_image)


def contrast(x: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """1/N Σ_j [ −mean_{k∈P_j} x_j·x_k + mean_{k∈N_j} x_j·x_k ] for boolean (N, N) masks P, N."""
    sim = x @ x.T
    pos, neg = positive.float(), negative.float()
    pos_term = (sim * pos).sum(1) / pos.sum(1).clamp(min=1)
    neg_term = (sim * neg).sum(1) / neg.sum(1).clamp(min=1)
    return (neg_term - pos_term).mean()


def image_class_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_vc: other images of the class are positives, images of other classes negatives."""
    same = y.unsqueeze(0) == y.unsqueeze(1)
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    return contrast(z, same & ~eye, ~same)


def language_class_loss(prompt_emb: torch.Tensor) -> torch.Tensor:
    """L_lc over prompt_emb (C, M, d): a class's other templates are positives, other classes negatives."""
    n_classes, n_templates, dim = prompt_emb.shape
    flat = prompt_emb.reshape(n_classes * n_templates, dim)          # row c*M + m is (c, m)
    labels = torch.arange(n_classes, device=flat.device).repeat_interleave(n_templates)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=flat.device)
    return contrast(flat, same & ~eye, ~same)


def spurious_image_loss(z: torch.Tensor, y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_vs: same class on another background is a positive; another class on the same background a negative."""
    same_class = y.unsqueeze(0) == y.unsqueeze(1)
    same_bg = b.unsqueeze(0) == b.unsqueeze(1)
    return contrast(z, same_class & ~same_bg, ~same_class & same_bg)


def spurious_crossmodal_loss(z: torch.Tensor, attribute_emb: torch.Tensor) -> torch.Tensor:
    """L_xs: mean |cosine| between every image (N, d) and every attribute prompt (B, M', d)."""
    return (z @ attribute_emb.reshape(-1, attribute_emb.shape[-1]).T).abs().mean()


def spurious_language_loss(prompt_emb: torch.Tensor, attribute_emb: torch.Tensor) -> torch.Tensor:
    """L_ls: mean |cosine| between every class prompt (C, M, d) and every attribute prompt (B, M', d)."""
    classes = prompt_emb.reshape(-1, prompt_emb.shape[-1])
    attributes = attribute_emb.reshape(-1, attribute_emb.shape[-1])
    return (classes @ attributes.T).abs().mean()


@dataclass
class Weights:
    """Each term's weight; 0 switches it off."""
    clip: float = 1.0
    vc: float = 1.0
    lc: float = 1.0
    vs: float = 1.0
    ls: float = 1.0
    xs: float = 0.0     # the released code's cross-modal term; off unless asked for

    @classmethod
    def only_clip(cls) -> "Weights":
        return cls(clip=1.0, vc=0.0, lc=0.0, vs=0.0, ls=0.0, xs=0.0)

    def active(self) -> list[str]:
        return [t for t in TERMS if getattr(self, t) > 0]


@dataclass
class Batch:
    """What one step's losses see: the batch's image embeddings and labels, and all the prompt embeddings."""
    z: torch.Tensor                     # (N, d) normalised image embeddings
    y: torch.Tensor                     # (N,) class indices
    prompt_emb: torch.Tensor            # (C, M, d) normalised, per template
    scale: torch.Tensor                 # exp(logit scale)
    b: torch.Tensor | None = None       # (N,) background indices, when known
    attribute_emb: torch.Tensor | None = None   # (B, M', d) background prompts, for L_ls
    parts: dict = field(default_factory=dict)


def total(batch: Batch, weights: Weights) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_term weight·term over the active terms; returns the sum and each term's value (for the progress bar)."""
    class_emb = F.normalize(batch.prompt_emb.mean(dim=1), dim=-1)
    compute = {
        "clip": lambda: clip_loss(batch.z, batch.y, class_emb, batch.scale),
        "vc": lambda: image_class_loss(batch.z, batch.y),
        "lc": lambda: language_class_loss(batch.prompt_emb),
        "vs": lambda: spurious_image_loss(batch.z, batch.y, batch.b),
        "ls": lambda: spurious_language_loss(batch.prompt_emb, batch.attribute_emb),
        "xs": lambda: spurious_crossmodal_loss(batch.z, batch.attribute_emb),
    }
    loss = batch.z.new_zeros(())
    parts: dict[str, float] = {}
    for term in weights.active():
        if term == "vs" and batch.b is None or term in ("ls", "xs") and batch.attribute_emb is None:
            continue
        value = compute[term]()
        loss = loss + getattr(weights, term) * value
        parts[term] = float(value.detach())
    return loss, parts
