# dm2 in a container: Python 3.11, the project and its requirements (PyTorch: CPU or CUDA build), and
# optionally real StarCraft II with the SMAC maps and SMAC itself (about 4 GB to download). README, "Docker":
#
#   docker build -t dm2 .                                                   # CPU PyTorch, simulator only
#   docker build --build-arg TORCH=cuda --build-arg INSTALL_SC2=1 -t dm2:gpu-sc2 .   # a lab box with a GPU
#
# Build arguments:
#   BASE             a Debian-based image with python3 (3.11) and its venv module
#   TORCH            cpu (default) or cuda: which build of the PyTorch version requirements.txt pins
#   TORCH_INDEX_URL  TORCH=cpu: an index serving CPU builds of torch (PyTorch publishes one)
#   TORCH_FIND_LINKS TORCH=cpu: or a directory URL holding the torch-<version>+cpu wheel
#   INSTALL_SC2      0 (default) or 1: run install_sc2.sh (StarCraft II in /opt/StarCraftII, the SMAC maps,
#                    requirements-sc2.txt); downloading the game accepts Blizzard's AI and ML License
#   SC2_VERSION      the StarCraft II Linux package install_sc2.sh fetches (default 4.10)
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH=cpu
ARG TORCH_INDEX_URL=
ARG TORCH_FIND_LINKS=
ARG INSTALL_SC2=0
ARG SC2_VERSION=4.10

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SC2PATH=/opt/StarCraftII

# tini runs as PID 1: it passes Ctrl-C and `docker stop` (SIGTERM) on to the run, which then saves a checkpoint
# and stops, and it reaps stray processes. curl, unzip: install_sc2.sh; git: SMAC is installed from its
# repository. Extra CA certificates in docker/certs/*.crt are trusted (pip uses the system bundle: PIP_CERT).
COPY docker/certs/ /usr/local/share/ca-certificates/dm2/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git tini unzip \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/dm2
COPY requirements.txt requirements-dev.txt requirements-sc2.txt install_sc2.sh ./
COPY docker/install-torch.sh docker/
RUN sh docker/install-torch.sh && pip install -r requirements-dev.txt
RUN case "$INSTALL_SC2" in \
      1) SC2_VERSION="$SC2_VERSION" PYTHON=python bash install_sc2.sh ;; \
      0) ;; \
      *) echo "INSTALL_SC2 must be 0 or 1, got '$INSTALL_SC2'" >&2; exit 2 ;; \
    esac
COPY . .

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "src/main.py", "--help"]
