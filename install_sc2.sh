#!/usr/bin/env bash
# Install real StarCraft II (Linux build 4.10), the SMAC maps and the Python packages for the
# `starcraft2` backend. Safe to run again: whatever is already in place is kept, and an install that was
# interrupted (no executable game in the newest Versions/Base<build>) is completed.
#
#   bash install_sc2.sh                  # game in $SC2PATH (default ~/StarCraftII), packages into `python`
#   SC2PATH=/data/StarCraftII PYTHON=.venv/bin/python bash install_sc2.sh
#   SC2_VERSION=4.6.2.69232 bash install_sc2.sh   # the version SMAC's published results used
#
# Downloading the game means accepting Blizzard's AI and Machine Learning License
# (https://blzdistsc2-a.akamaihd.net/AI_AND_MACHINE_LEARNING_LICENSE.html); the archive's password
# "iagreetotheeula" records that agreement.
set -euo pipefail

SC2_VERSION="${SC2_VERSION:-4.10}"      # Blizzard's Linux package name: 4.10, or e.g. 4.6.2.69232
SC2_URL="https://blzdistsc2-a.akamaihd.net/Linux/SC2.${SC2_VERSION}.zip"
SC2_ZIP_PASSWORD="iagreetotheeula"
MAPS_URL="https://github.com/oxwhirl/smac/releases/download/v0.1-beta1/SMAC_Maps.zip"

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SC2PATH="${SC2PATH:-$HOME/StarCraftII}"
PYTHON="${PYTHON:-python}"
DOWNLOADS="${SC2PATH%/}.downloads"   # kept beside the game so that an interrupted download resumes

say() { printf '==> %s\n' "$*"; }
die() { printf 'install_sc2.sh: error: %s\n' "$*" >&2; exit 1; }

case "$(uname -s)" in
  Linux) ;;
  *) die "this script installs the Linux build of StarCraft II. On Windows or macOS install the game from Blizzard's Battle.net launcher, then run only the maps and Python steps: SC2PATH=<game dir> bash install_sc2.sh" ;;
esac
command -v unzip >/dev/null || die "'unzip' is not installed (Debian/Ubuntu: apt-get install unzip)"
if command -v curl >/dev/null; then
  fetch() { curl -fL --retry 3 -C - -o "$2" "$1"; }
elif command -v wget >/dev/null; then
  fetch() { wget -c -O "$2" "$1"; }
else
  die "neither curl nor wget is installed; install one of them"
fi
"$PYTHON" -c 'import sys' 2>/dev/null || die "Python interpreter '$PYTHON' not found; set PYTHON=/path/to/python"

# Download $1 to $DOWNLOADS/$2 unless a complete copy is already there.
download() {
  local url="$1" file="$DOWNLOADS/$2"
  mkdir -p "$DOWNLOADS"
  if [[ -f "$file.complete" ]]; then
    say "using the earlier download $file"
  else
    say "downloading $url"
    fetch "$url" "$file" || die "download of $url failed; run the script again to resume it"
    touch "$file.complete"
  fi
}

# Whether $1 holds a complete game: the newest Versions/Base<build> has the executable SC2_x64, which
# is what pysc2 launches (the same check as src/envs/starcraft2_backend.py).
game_complete() {
  local build
  build=$(ls "$1/Versions" 2>/dev/null | sed -n 's/^Base\([0-9][0-9]*\)$/\1/p' | sort -n | tail -n 1)
  [[ -n "$build" && -x "$1/Versions/Base$build/SC2_x64" ]]
}

# 1. The game. Unpacked beside $SC2PATH and moved into place in one step when $SC2PATH does not exist
# yet, so that an interrupted install never looks complete.
if game_complete "$SC2PATH"; then
  say "StarCraft II is already installed in $SC2PATH"
else
  [[ -d "$SC2PATH/Versions" ]] && say "the StarCraft II install in $SC2PATH is incomplete (interrupted?): installing it again"
  download "$SC2_URL" "SC2.${SC2_VERSION}.zip"
  say "unpacking StarCraft II ${SC2_VERSION} into $SC2PATH (about 7 GB)"
  staging="$DOWNLOADS/unpacked"
  rm -rf "$staging"
  unzip -q -P "$SC2_ZIP_PASSWORD" "$DOWNLOADS/SC2.${SC2_VERSION}.zip" -d "$staging"
  game_complete "$staging/StarCraftII" || die "the archive did not contain StarCraftII/Versions/Base<build>/SC2_x64; delete $DOWNLOADS and run again"
  if [[ -e "$SC2PATH" ]]; then
    cp -a "$staging/StarCraftII/." "$SC2PATH/"
  else
    mkdir -p "$(dirname "$SC2PATH")"
    mv "$staging/StarCraftII" "$SC2PATH"
  fi
  game_complete "$SC2PATH" || die "copying the game into $SC2PATH failed (disk full?); free space and run again"
  rm -rf "$staging" "$DOWNLOADS/SC2.${SC2_VERSION}.zip" "$DOWNLOADS/SC2.${SC2_VERSION}.zip.complete"
fi

# 2. The SMAC maps.
if [[ -f "$SC2PATH/Maps/SMAC_Maps/3m.SC2Map" ]]; then
  say "the SMAC maps are already in $SC2PATH/Maps/SMAC_Maps"
else
  download "$MAPS_URL" "SMAC_Maps.zip"
  mkdir -p "$SC2PATH/Maps"
  unzip -q -o "$DOWNLOADS/SMAC_Maps.zip" -d "$SC2PATH/Maps"
  [[ -f "$SC2PATH/Maps/SMAC_Maps/3m.SC2Map" ]] || die "SMAC_Maps.zip did not unpack to $SC2PATH/Maps/SMAC_Maps; delete $DOWNLOADS and run again"
  rm -f "$DOWNLOADS/SMAC_Maps.zip" "$DOWNLOADS/SMAC_Maps.zip.complete"
fi
rmdir "$DOWNLOADS" 2>/dev/null || true

# 3. The Python packages (SMAC from its git repository, pysc2).
say "installing requirements-sc2.txt with $PYTHON"
"$PYTHON" -m pip install -r "$REPO_DIR/requirements-sc2.txt"

# 4. Check that SMAC imports (an old s2clientprotocol may need the pure-Python protobuf runtime).
if ! "$PYTHON" -c 'from smac.env import StarCraft2Env' 2>/dev/null; then
  "$PYTHON" -c 'from smac.env import StarCraft2Env' || true
  die "SMAC does not import (error above). If it says 'Descriptors cannot be created directly', run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python exported, or install protobuf<=3.20.3"
fi

say "done: StarCraft II ${SC2_VERSION} and the SMAC maps are in $SC2PATH"
if [[ "$SC2PATH" != "$HOME/StarCraftII" ]]; then
  say "this is not the default location: export SC2PATH=$SC2PATH before training"
fi
say "env_args.backend=auto now picks real StarCraft II; force it with env_args.backend=starcraft2"
say "games at once: env_args.max_concurrent_games (0 = from this machine's cores and memory)"
