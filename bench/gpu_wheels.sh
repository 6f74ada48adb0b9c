#!/usr/bin/env bash
# Run on a connected machine before a GPU session: fetch the wheels the offline GPU machine lacks (see
# ../shared/gpu/README.md) into .gpu-wheels/ (git-ignored), then carry it to the device:
#   run(command="bash bench/gpu_session.sh", carry=[".gpu-wheels"])
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
DEST=.gpu-wheels
rm -rf "$DEST" && mkdir -p "$DEST/whl"
version() { .venv/bin/python -c "from importlib.metadata import version; print(version('$1'))"; }
PLATFORMS=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do PLATFORMS="$PLATFORMS --platform $p"; done
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions zarr numcodecs donfig \
            google-crc32c pymmcore pymmcore-plus psygnal useq-schema shapely pyzmq laptrack looseversion \
            platformdirs ome-types ome-writers pydantic-extra-types pooch; do
  v=$(version "$name" 2>/dev/null) || { echo "skipped $name: not in the venv, so not needed"; continue; }
  $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
      -d "$DEST/whl" "$name==$v"
done
if v=$(version trackpy 2>/dev/null); then $PIP wheel -q --no-deps -w "$DEST/whl" "trackpy==$v"; fi
# psfmodels has no cp312 wheel here: ship its sdist without setuptools-scm (the device has no network)
$PIP download -q --no-deps --no-binary :all: -d "$DEST" "psfmodels==$(version psfmodels)"
tar xzf "$DEST"/psfmodels-*.tar.gz -C "$DEST" && rm "$DEST"/psfmodels-*.tar.gz && mv "$DEST"/psfmodels-* "$DEST/psfmodels-src"
sed -i 's/, "setuptools-scm"//; /^\[tool.setuptools_scm\]/,/^$/d' "$DEST/psfmodels-src/pyproject.toml"
sed -i "s/^name = psfmodels/name = psfmodels\nversion = $(version psfmodels)/" "$DEST/psfmodels-src/setup.cfg"
du -sh "$DEST"
