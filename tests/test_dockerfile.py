"""The worker image: no Docker engine runs here, so check what can be checked without one."""
import re
from pathlib import Path

import apache_beam

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_image_is_beams_sdk_container_at_the_installed_beam_version():
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, flags=re.M)
    image, tag = base.split(":")
    assert image == "apache/beam_python3.11_sdk"
    assert tag == apache_beam.__version__
    assert f'"apache-beam[gcp,aws]=={apache_beam.__version__}"' in (ROOT / "setup.py").read_text()
    assert f'"apache-beam=={apache_beam.__version__}"' in (ROOT / "setup.py").read_text()


def test_every_file_the_image_copies_exists():
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, flags=re.M):
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_the_worker_entry_point_is_left_to_beam():
    # Beam's boot program must stay the entry point, or the image cannot serve as a worker.
    assert not re.search(r"^ENTRYPOINT", DOCKERFILE, flags=re.M)
