"""Model loading through open_clip's real factory: local files, cached tags, fast clear failures."""
import time

import open_clip
import pytest
import torch

from curation import clip_models
from curation.errors import UserError

# A small config that open_clip ships; random weights saved to a local file stand in for real ones.
TINY = "RN50"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_load_checkpoint_file_matches_saved_weights(tiny_checkpoint):
    path, original = tiny_checkpoint
    loaded = clip_models.load(TINY, str(path))
    a = dict(original.state_dict())
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, a[name]), name
    assert not loaded.model.training


def test_cached_hub_tag_loads_offline(tiny_checkpoint, tmp_path, monkeypatch):
    """A tag whose weights sit in the Hugging Face cache loads with no network at all."""
    import huggingface_hub.constants as c
    path, _ = tiny_checkpoint
    repo, filename = clip_models.describe_source(TINY, "openai").split(" from the Hugging Face repo ")[::-1]
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / filename).write_bytes(path.read_bytes())
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert clip_models.cached_weights(TINY, "openai") is not None
    loaded = clip_models.load(TINY, "openai")
    assert loaded.pretrained == "openai"


@pytest.mark.parametrize("name, pretrained, device, message", [
    ("ViT-B-33", None, "cpu", "no model named 'ViT-B-33'. Did you mean"),
    ("ViT-B-32", "/does/not/exist.pt", "cpu", "checkpoint file '/does/not/exist.pt' does not exist"),
    ("ViT-B-32", "laion9000", "cpu", "no pretrained tag 'laion9000'"),
    ("ViT-B-32", "laion400m_e31", "cpu", "not on this machine: expected open_clip_pytorch_model.bin"),
    ("ViT-B-32", None, "cuda", "torch sees no CUDA GPU"),
    ("ViT-B-32", None, "tpu", "unknown device"),
])
def test_bad_requests_fail_fast_and_clearly(name, pretrained, device, message, monkeypatch):
    monkeypatch.delenv("COUNTERANIMAL_ALLOW_DOWNLOAD", raising=False)
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    start = time.monotonic()
    with pytest.raises(UserError, match=message):
        clip_models.load(name, pretrained, device=device)
    assert time.monotonic() - start < 10  # no hub retry loop (a regression would take ~45 s)


@pytest.mark.parametrize("content", [b"a,b\n1,2\n", b"", b"PK\x03\x04 not really a zip"])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(content)
    with pytest.raises(UserError, match="could not load|weights.pt"):
        clip_models.load("ca-tiny", str(bad))
