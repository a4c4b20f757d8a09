"""One real Label Studio server per test session, and small runs with real JPEGs in real shards.

The server's data dir, config home (state, token) and files root live under the session's tmp
dir; it is stopped by PID when the session ends. Annotator users are created through the API and
their tokens read with `label-studio user --username … --data-dir D`, as a curator would.
"""
from __future__ import annotations

import io
import os
import socket
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curation import atomic
import schemas

CLASSES = [("tiger", 292), ("ice bear", 296), ("flamingo", 130)]
BACKGROUNDS = ["grass", "snow", "water", "sky"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabelStudioServer:
    url: str
    home: Path
    data_dir: Path
    files_root: Path
    port: int
    tokens: dict[str, str] = field(default_factory=dict)

    def admin(self):
        from label_studio_sdk import LabelStudio
        from annotation import server
        return LabelStudio(base_url=self.url, api_key=server.token_path(self.home).read_text().strip())

    def annotator(self, email: str):
        """An annotator's own client: the user is created through the API, the token read by CLI."""
        from label_studio_sdk import LabelStudio
        from annotation import server
        if email not in self.tokens:
            admin = self.admin()
            me = admin.users.whoami()
            if not any(u.email == email for u in admin.users.list()):
                admin.users.create(username=email.split("@")[0], email=email, password="annotator-pass-1",
                                   active_organization=me.active_organization)
            self.tokens[email] = server.user_token(email, self.data_dir)
        return LabelStudio(base_url=self.url, api_key=self.tokens[email])

    def restart(self):
        from annotation import server
        server.start(port=self.port, data_dir=self.data_dir, files_root=self.files_root, home=self.home)

    def kill(self):
        from annotation import server
        server.kill(self.home)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    from annotation import server
    try:
        server.ensure_installed()
    except Exception as exc:   # the Makefile installs it; a bare checkout without network cannot
        pytest.skip(f"label-studio could not be installed into its venv: {exc}")
    base = tmp_path_factory.getbasetemp()
    home, data_dir = base / "ls-home", base / "ls-data"
    saved = {k: os.environ.get(k) for k in ("COUNTERANIMAL_HOME", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL",
                                            "LABEL_STUDIO_TOKEN_FILE", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ["COUNTERANIMAL_HOME"] = str(home)
    port = free_port()
    state = server.start(port=port, data_dir=data_dir, files_root=base, home=home)
    try:
        yield LabelStudioServer(url=state.url, home=home, data_dir=data_dir, files_root=base, port=port)
    finally:
        server.stop(home)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _jpeg(seed: int) -> bytes:
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (96, 72), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 14, 76, 58), fill=(240, 240, 240), outline=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def score_row(uid: str, class_idx: int, shard: str, correct: bool, model_id: str = "toy/model") -> dict:
    """A scores row (schema `scores`) with the fields the annotation loop reads set, the rest neutral."""
    return dict(uid=uid, model_id=model_id, class_idx=class_idx, shard=shard, label_space="imagenet1k",
                true_label=class_idx, top1=class_idx if correct else 0, top1_name="x", correct=correct,
                p_true=0.9 if correct else 0.1, true_rank=1 if correct else 2, margin=0.5 if correct else -0.5,
                top5=[class_idx], top5_p=[0.9], background="grass", background_p=[0.25] * 4, p_subject=0.9,
                embedding=[0.0] * 4)


def make_run(root: Path, per_group: int = 4, overlap: int = 2, calibration_share: float = 0.25,
             shard_size: int = 500, gold: bool = True, thresholds: dict | None = None, **annotation) -> Path:
    """A run directory as the curation stages leave it: config, samples, shards, groups, scores, proposals.

    Per class, `per_group` photos on each background; the proposal pairs each class's first two
    backgrounds (common, counter); one extra flagged photo per class; gold answers for every photo.
    The model gets every photo of the common background right and every other one wrong.
    """
    run = Path(root)
    run.mkdir(parents=True, exist_ok=True)
    cfg = {"name": "lstest", "classes": [{"name": n, "imagenet_idx": i} for n, i in CLASSES],
           "backgrounds": BACKGROUNDS, "models": [{"name": "RN50", "id": "toy/model"}],
           "annotation": {"overlap": overlap, "calibration_share": calibration_share, "retries": 2,
                          "backoff": 0.5, **annotation}, **({"thresholds": thresholds} if thresholds else {})}
    atomic.write_text(run / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    samples, groups, gold_rows, proposals, scores = [], [], [], [], []
    n = 0
    for ci, (name, idx) in enumerate(CLASSES):
        common, counter = BACKGROUNDS[ci % 4], BACKGROUNDS[(ci + 1) % 4]
        proposals.append(dict(class_idx=idx, class_name=name, source="model", model_id="toy/model", common=common,
                              counter=counter, decision="kept", reason="test pair"))
        for bg in BACKGROUNDS + ["flagged"]:
            for j in range(per_group if bg != "flagged" else 1):
                uid = f"u{n:06d}"
                shard = f"{n // shard_size:05d}.tar"
                flags = ["ambiguous"] if bg == "flagged" else []
                samples.append(dict(uid=uid, class_idx=idx, class_name=name, chunk=n // shard_size, shard=shard,
                                    key=f"{n:09d}", status="ok", flags=flags))
                real_bg = BACKGROUNDS[(ci + 2) % 4] if bg == "flagged" else bg
                groups.append(dict(uid=uid, class_idx=idx, class_name=name, background=real_bg, confidence=0.8,
                                   method="zero-shot", model_id="toy/model"))
                gold_rows.append(dict(uid=uid, background=real_bg, is_class="yes"))
                scores.append(score_row(uid, idx, shard, real_bg == common))
                n += 1
    shards: dict[str, list[dict]] = {}
    for s in samples:
        shards.setdefault(s["shard"], []).append(s)
    (run / "shards").mkdir(exist_ok=True)
    for shard, rows in shards.items():
        with atomic.atomic_path(run / "shards" / shard) as tmp, tarfile.open(tmp, "w") as tar:
            for s in rows:
                data = _jpeg(int(s["key"]))
                info = tarfile.TarInfo(f"{s['key']}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    atomic.write_parquet(run / "samples" / "00000.parquet", schemas.conform(pa.Table.from_pylist(samples), "samples"))
    atomic.write_parquet(run / "groups" / "model-00000.parquet", schemas.conform(pa.Table.from_pylist(groups), "groups"))
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(proposals), "proposals"))
    atomic.write_parquet(run / "scores" / "00000.parquet", schemas.conform(pa.Table.from_pylist(scores), "scores"))
    if gold:
        atomic.write_parquet(run / "annotation" / "gold.parquet",
                             schemas.conform(pa.Table.from_pylist(gold_rows), "annotation_gold"))
    return run


def make_custom_run(root: Path, photos: list[dict], model_pairs: dict[str, tuple[str, str, str]],
                    thresholds: dict | None = None, **annotation) -> Path:
    """A run from explicit photos, with a truth file (RUN/truth.parquet) for simulated annotators.

    ``photos``: dicts with class_name, model_bg (the model's background), true_bg (the real one),
    correct (the model's top-1 right?) and optionally confidence. ``model_pairs``: class_name →
    (common, counter, decision) written as the model's proposals. Give every run of a session its own
    folder name: the project title is config name + folder name, and a push that has no project id
    yet finds its project by title (two runs called "killed" would share one).
    """
    run = Path(root)
    run.mkdir(parents=True, exist_ok=True)
    idx = {n: i for n, i in CLASSES}
    names = sorted({p["class_name"] for p in photos}, key=lambda n: idx[n])
    cfg = {"name": "lstest", "classes": [{"name": n, "imagenet_idx": idx[n]} for n in names],
           "backgrounds": BACKGROUNDS, "models": [{"name": "RN50", "id": "toy/model"}],
           "thresholds": thresholds or {},
           "annotation": {"overlap": 2, "calibration_share": 0.0, "retries": 2, "backoff": 0.5, **annotation}}
    atomic.write_text(run / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    samples, groups, scores, truth = [], [], [], []
    (run / "shards").mkdir(exist_ok=True)
    with atomic.atomic_path(run / "shards" / "00000.tar") as tmp, tarfile.open(tmp, "w") as tar:
        for n, p in enumerate(photos):
            uid, key, c = f"c{n:06d}", f"{n:09d}", idx[p["class_name"]]
            data = _jpeg(n)
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            samples.append(dict(uid=uid, class_idx=c, class_name=p["class_name"], chunk=0, shard="00000.tar",
                                key=key, status="ok", flags=[]))
            groups.append(dict(uid=uid, class_idx=c, class_name=p["class_name"], background=p["model_bg"],
                               confidence=p.get("confidence", 0.9), method="zero-shot", model_id="toy/model"))
            scores.append(score_row(uid, c, "00000.tar", p["correct"]))
            truth.append(dict(uid=uid, background=p["true_bg"], class_name=p["class_name"]))
    proposals = [dict(class_idx=idx[n], class_name=n, source="model", model_id="toy/model", common=a, counter=b,
                      decision=d, reason="test pair") for n, (a, b, d) in model_pairs.items()]
    atomic.write_parquet(run / "samples" / "00000.parquet", schemas.conform(pa.Table.from_pylist(samples), "samples"))
    atomic.write_parquet(run / "groups" / "model-00000.parquet", schemas.conform(pa.Table.from_pylist(groups), "groups"))
    atomic.write_parquet(run / "scores" / "00000.parquet", schemas.conform(pa.Table.from_pylist(scores), "scores"))
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(proposals), "proposals"))
    atomic.write_parquet(run / "truth.parquet", pa.Table.from_pylist(truth))
    return run
