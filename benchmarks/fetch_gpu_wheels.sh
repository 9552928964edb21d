#!/usr/bin/env bash
# Run here (with network), before benchmarks/gpu_check.sh on the GPU machine, which reaches no
# package index: downloads the wheels its image lacks (fabio, gemmi, xraydb, hdf5plugin and what
# they need) for its Python 3.12 into ./.whl (ignored by git; carried with `carry: [".whl"]`).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in fabio gemmi xraydb hdf5plugin sqlalchemy platformdirs greenlet; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
du -sh .whl
