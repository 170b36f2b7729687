#!/bin/sh
# Install PyTorch into the image's Python, at the version requirements.txt pins:
#   TORCH=cpu   the CPU build (torch==<version>+cpu), from TORCH_FIND_LINKS (a directory or URL holding the
#               wheel) or TORCH_INDEX_URL (an index that serves CPU builds and their dependencies, such as
#               PyTorch's own CPU wheel index)
#   TORCH=cuda  the package index's Linux build of torch, which is the CUDA one (several GB)
set -eu
version=$(sed -n 's/^torch==\([0-9][0-9.]*\).*/\1/p' requirements.txt)
[ -n "$version" ] || { echo "install-torch.sh: requirements.txt pins no torch==<version>" >&2; exit 2; }
case "${TORCH:-cpu}" in
  cuda)
    pip install "torch==$version" ;;
  cpu)
    set --
    [ -n "${TORCH_FIND_LINKS:-}" ] && set -- "$@" --find-links "$TORCH_FIND_LINKS"
    [ -n "${TORCH_INDEX_URL:-}" ] && set -- "$@" --index-url "$TORCH_INDEX_URL"  # it serves torch's dependencies too
    pip install "$@" "torch==$version+cpu" || {
      echo "install-torch.sh: no CPU build of torch $version found. Give one with --build-arg TORCH_INDEX_URL=<an index serving CPU builds of torch> or --build-arg TORCH_FIND_LINKS=<URL of a directory holding torch-$version+cpu-*.whl>, or build the CUDA variant with --build-arg TORCH=cuda." >&2
      exit 1
    } ;;
  *)
    echo "install-torch.sh: TORCH must be cpu or cuda, got '$TORCH'" >&2
    exit 2 ;;
esac
