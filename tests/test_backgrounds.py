"""Background assignment on embeddings whose scene structure is known."""
import numpy as np

from curation import backgrounds
from curation.backgrounds import Settings

NAMES = ["snow", "grass", "water", "sky"]


def _photos(seed=0, per_scene=40):
    """Three scenes (snow, grass, a scene outside the vocabulary) plus a strong shared class direction."""
    rng = np.random.default_rng(seed)
    d = 64
    class_dir = rng.normal(size=d)
    class_dir /= np.linalg.norm(class_dir)
    scenes = rng.normal(size=(3, d))
    emb, probs, truth = [], [], []
    for s, (name, p) in enumerate([("snow", [0.8, 0.1, 0.05, 0.05]), ("grass", [0.1, 0.8, 0.05, 0.05]),
                                   ("cave", [0.28, 0.24, 0.24, 0.24])]):
        for _ in range(per_scene):
            e = 3 * class_dir + scenes[s] + 0.3 * rng.normal(size=d)
            emb.append(e / np.linalg.norm(e))
            noisy = np.clip(np.array(p) + 0.15 * rng.normal(size=4), 0.01, None)
            probs.append(noisy / noisy.sum())
            truth.append(name)
    uids = [f"u{i:03d}" for i in range(len(emb))]
    return uids, np.array(emb, dtype=np.float32), np.array(probs, dtype=np.float32), class_dir, truth


def test_clusters_recover_scenes_once_the_class_direction_is_removed():
    uids, emb, probs, class_dir, truth = _photos()
    rows = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(method="cluster"))
    by_cluster = {}
    for r, t in zip(rows, truth):
        by_cluster.setdefault(r["cluster"], set()).add(t)
    assert sorted(len(v) for v in by_cluster.values()) == [1, 1, 1]   # each cluster is one scene
    named = {t: (r["background"], r["flag"]) for r, t in zip(rows, truth)}
    assert named["snow"] == ("snow", None) and named["grass"] == ("grass", None)
    assert named["cave"][1] == backgrounds.UNNAMED                      # no vocabulary label fits


def test_hybrid_uses_the_cluster_only_where_zero_shot_is_unsure():
    uids, emb, probs, class_dir, truth = _photos(seed=1)
    rows = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(method="hybrid", min_confidence=0.5))
    for r, p in zip(rows, probs):
        assert r["method"] == ("zero-shot" if p.max() >= 0.5 else "cluster")
        assert r["zero_shot"] == NAMES[int(p.argmax())]
    zs = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(method="zero-shot"))
    acc = lambda rs: np.mean([r["background"] == t for r, t in zip(rs, truth) if t != "cave"])
    assert acc(rows) >= acc(zs)          # clusters repair unsure zero-shot labels, never the reverse here


def test_deterministic_and_order_independent_cluster_ids():
    uids, emb, probs, class_dir, _ = _photos(seed=2)
    a = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(seed=7))
    b = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(seed=7))
    assert a == b
    sizes = np.bincount([r["cluster"] for r in a])
    assert list(sizes) == sorted(sizes, reverse=True)   # cluster 0 is the largest


def test_small_classes_get_one_cluster():
    uids, emb, probs, class_dir, _ = _photos(per_scene=3)
    rows = backgrounds.assign_class(uids, emb, probs, NAMES, class_dir, Settings(min_cluster_size=10))
    assert {r["cluster"] for r in rows} == {0}
