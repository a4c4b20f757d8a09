"""The linear-head baselines on frozen image features: ERM and Group DRO (groups = class × background).

Both train a linear head (weights and bias, from zero) on the model's own projected, normalised image
embeddings, sampling photos as they come (not group-balanced: that is what Group DRO corrects for),
and keep the epoch with the best validation worst-group accuracy, like every method here.

Group DRO (Sagawa et al., 2020, Algorithm 1, online): per batch, each group's mean loss ℓ_g; the group
weights q_g ← q_g · exp(η ℓ_g), renormalised; the step minimises Σ_g q_g ℓ_g.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from curation.mitigate import metrics


def fit_head(z: torch.Tensor, data, method: str, settings) -> tuple[nn.Linear, dict]:
    from tqdm import tqdm

    from curation.mitigate.train import Sampler

    torch.manual_seed(settings.seed)
    head = nn.Linear(z.shape[1], len(data.classes))
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.head_lr, weight_decay=settings.weight_decay)
    train, val = data.index("train"), data.index("val")
    n_groups = len(data.classes) * len(data.backgrounds)
    groups = torch.from_numpy(data.y * len(data.backgrounds) + data.b)
    y = torch.from_numpy(data.y)
    q = torch.ones(n_groups) / n_groups
    sampler = Sampler(train, groups.numpy(), "natural", settings.batch_size, settings.seed)
    best, best_state, history = None, None, []
    bar = tqdm(total=settings.epochs * sampler.steps, desc=f"mitigate: {method}", unit="step",
               disable=not settings.progress)
    for epoch in range(settings.epochs):
        for idx in sampler.epoch():
            idx = torch.from_numpy(idx)
            per_sample = F.cross_entropy(head(z[idx]) * 10.0, y[idx], reduction="none")   # ×10: unit-norm features
            if method == "group-dro":
                g = groups[idx]
                present = torch.unique(g)
                group_loss = torch.stack([per_sample[g == k].mean() for k in present])
                with torch.no_grad():
                    q[present] = q[present] * torch.exp(settings.gdro_step * group_loss)
                    q /= q.sum()
                loss = (q[present] * group_loss).sum()
            else:
                loss = per_sample.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            bar.update(1)
        score = metrics.evaluate(predict_head(head, z[val]), data.y[val], data.b[val], data.pairs, data.classes,
                                 data.backgrounds, settings.min_group)
        history.append({"epoch": epoch + 1, "val_avg_acc": score["avg_acc"],
                        "val_worst_group_acc": score["worst_group_acc"], "loss": round(loss.item(), 4)})
        if metrics.better(score, best):
            best, best_state = score, copy.deepcopy(head.state_dict())
    bar.close()
    head.load_state_dict(best_state)
    return head, {"best_epoch": max(history, key=lambda h: (h["val_worst_group_acc"], h["val_avg_acc"]))["epoch"],
                  "history": history}


def predict_head(head: nn.Linear, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return head(z).argmax(1).numpy()
