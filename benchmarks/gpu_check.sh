#!/usr/bin/env bash
# The GPU checks of the CUDA engine, as one script for the GPU machine (about 5 minutes on an
# H200; results under $OUT). Prepare the wheels its image lacks with benchmarks/fetch_gpu_wheels.sh
# and carry .whl. Steps:
#   1. parity: the one-body engine tests with the real `cuda` engine beside numpy/cpu and the host
#      build; GPU-only tests (process --device gpu vs cpu on the same data, kernels load)
#   2. benchmarks/gpu_stream.py: in-memory throughput and the device's copy ceilings
#   3. benchmarks/integrate_engines.py on a 24-frame 1m preset: cuda against cpu
#   4. process --device gpu (JAX scaling on the GPU) against --device cpu: merged.nxs compared
#   5. benchmarks/scaling.py: the Gauss-Newton fit of 10^6 observations with JAX on the GPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
status=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import cupy, jax, numba; print('cupy', cupy.__version__, 'jax', jax.__version__, jax.devices(), \
'numba', numba.__version__)" 2>&1 | tee "$OUT/versions.txt"
python3 -m pytest -q -p no:cacheprovider -rs tests/integration/test_engines.py tests/test_gpu.py tests/test_kernels.py \
    2>&1 | tee "$OUT/pytest.txt" || status=1
python3 benchmarks/gpu_stream.py --frames 200 --out "$OUT/gpu_stream.json" 2>&1 | tail -5 || status=1
python3 -m gpudiffuse simulate /tmp/gd1m --preset 1m --frames 24 > /dev/null 2>&1
python3 benchmarks/integrate_engines.py --data /tmp/gd1m --engines cuda cpu \
    --out "$OUT/integrate_engines_1m_gpu.json" 2>&1 | tail -3 || status=1
for device in cpu gpu; do
    /usr/bin/time -v python3 -m gpudiffuse process --xds /tmp/gd1m -o "/tmp/gd1m_$device" --device "$device" \
        > "$OUT/process_$device.log" 2>&1 || status=1
done
python3 - <<'PY' 2>&1 | tee "$OUT/process_compare.txt" || status=1
import h5py, numpy as np
a, b = (h5py.File(f"/tmp/gd1m_{d}/merged.nxs") for d in ("cpu", "gpu"))
for k in ("h", "k", "l", "n"):
    print(k, "identical" if np.array_equal(a["entry/merged"][k][()], b["entry/merged"][k][()]) else "DIFFERENT")
for k in ("intensity", "sigma"):
    x, y = a["entry/merged"][k][()], b["entry/merged"][k][()]
    print(k, "max relative difference", float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-300))))
PY
python3 benchmarks/scaling.py --rows 1000000 --out "$OUT/scaling_1e6_gpu.json" 2>&1 | tail -4 || status=1
exit $status
