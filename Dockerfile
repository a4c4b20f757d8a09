# counteranimal's worker image: Beam's own Python 3.11 SDK container (its boot entry point runs the
# SDK harness on Dataflow, Flink and Spark workers), with the project and its dependencies installed
# into the image's Python, so the same image serves as --sdk_container_image and to run the CLI.
#
#   docker build -t counteranimal .                                  (CUDA torch wheels, PyPI's default)
#   docker build --build-arg TORCH_INDEX_URL=<a CPU wheel index> -t counteranimal:cpu .
#   worker:  ... -- --runner DataflowRunner --sdk_container_image counteranimal --experiments use_runner_v2
#   CLI:     docker run --rm --entrypoint counteranimal -v $PWD/runs:/runs counteranimal curate /runs/r1
#
# The Beam version in FROM must equal the apache-beam pin in setup.py (tests/test_dockerfile.py).
FROM apache/beam_python3.11_sdk:2.77.0

ARG TORCH_INDEX_URL=
ENV NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# tuxpaint packages: the real photos the planted world is built from (GPL-2+, installed, never shipped).
RUN apt-get update \
 && apt-get install -y --no-install-recommends make unzip tuxpaint-stamps-default tuxpaint-data \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/counteranimal
COPY setup.py Makefile ./
COPY schemas schemas
COPY curation curation
COPY pipeline pipeline
COPY annotation annotation
# torch first (see README "Dependencies"), then the project into the SDK's own Python, which the
# worker harness imports from; apache-beam is already there at the pinned version.
RUN pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir ".[cluster]"
# ENTRYPOINT stays Beam's /opt/apache/beam/boot (the worker needs it); the CLI is `--entrypoint counteranimal`.
