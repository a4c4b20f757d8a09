# counteranimal on a cluster worker or a laptop without a Python set-up.
# Build: docker build -t counteranimal .   Run: docker run --rm -v $PWD/runs:/runs counteranimal curate /runs/r1
FROM python:3.11-slim-bookworm

ENV NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# make: the set-up entry point; tuxpaint packages: the real photos the planted world is built from.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make unzip tuxpaint-stamps-default tuxpaint-data \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/counteranimal
COPY setup.py Makefile ./
COPY schemas schemas
COPY curation curation
COPY pipeline pipeline
COPY annotation annotation
# torch first (the CPU/CUDA build you want), then the project: see README "Dependencies".
RUN make setup

ENTRYPOINT ["/opt/counteranimal/.venv/bin/counteranimal"]
CMD ["--help"]
