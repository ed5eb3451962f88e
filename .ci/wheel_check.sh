#!/usr/bin/env bash
# One wheel for many torch versions (issue 14): `python -m build --wheel` builds one wheel, in an isolated
# build environment that holds no torch at all (setup.py neither imports torch nor uses its headers or
# libraries: pybind11 and raw pointers); this script checks that the wheel carries both extensions and that
# neither links a torch or CUDA runtime library, then installs it into a fresh venv per torch version and runs
# every op on the cpu and Triton-interpreter backends against the float64 reference (a selection of the
# project's own tests, run against the installed wheel, not the checkout).
#
#   .ci/wheel_check.sh                      # torch 2.15.0 (the newest release) and 2.5.1 (the oldest pyproject admits)
#   LSLU_WHEEL_TORCH="2.13.0" .ci/wheel_check.sh   # other versions, space-separated
#   LSLU_WHEEL=dist/lslu_kernels-....whl .ci/wheel_check.sh   # check a wheel built before instead of building one
#
# Nothing is cached across runs: everything lives in a temporary folder removed at the end, and pip runs
# with --no-cache-dir. torch releases other than 2.13.0 are CUDA builds of ~3 GB with their NVIDIA wheels;
# they import and run on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
versions=${LSLU_WHEEL_TORCH:-"2.15.0 2.5.1"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The machine's pip may cap torch at the release it keeps on disk (/etc/xdg/pip); the versions to test are
# named exactly here, so no cap applies.
export PIP_CONSTRAINT=/dev/null PIP_NO_CACHE_DIR=1
start=$SECONDS
pip_quiet() { "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

if [ -n "${LSLU_WHEEL:-}" ]; then  # a wheel built before (trying this script out; CI builds its own)
  mkdir "$work/dist" && cp "$LSLU_WHEEL" "$work/dist/"
else
  echo "== building the wheel (isolated build environment, no torch)"
  python3 -m venv "$work/build-venv"
  pip_quiet "$work/build-venv/bin/pip" install -q build
  # From a copy of the tree without its build outputs, so that nothing compiled before is reused.
  mkdir "$work/src"
  tar -C "$root" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./.ci/triton-oldest --exclude='*.so' \
    -cf - . | tar -C "$work/src" -xf -
  "$work/build-venv/bin/python" -m build --wheel --outdir "$work/dist" "$work/src" > "$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log"; exit 1; }
fi
wheels=("$work"/dist/*.whl)
[ ${#wheels[@]} -eq 1 ] || { echo "expected one wheel, got: ${wheels[*]}"; exit 1; }
wheel=${wheels[0]}
echo "wheel: $(basename "$wheel") ($((SECONDS - start)) s)"

echo "== the wheel's extensions and the libraries they need"
mkdir "$work/unpacked" && (cd "$work/unpacked" && python3 -m zipfile -e "$wheel" .)
expected=(_C_cpu)
if command -v nvcc > /dev/null || [ -n "${CUDA_HOME:-}" ]; then expected+=(_C_cuda); fi  # setup.py's rule
for name in "${expected[@]}"; do
  so=$(ls "$work"/unpacked/lslu_kernels/"$name".*.so 2> /dev/null) || { echo "the wheel has no $name"; exit 1; }
  needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  echo "$name needs: $needed"
  if grep -Eq 'torch|c10|cudart|libcuda|python3' <<< "$needed"; then
    echo "$name links a torch, CUDA runtime or libpython library: one wheel could not serve every torch"; exit 1
  fi
done

# The tests the wheel must pass, from a copy of tests/ so that `import lslu_kernels` finds the installed wheel:
# parity with the float64 reference for every op and parameter variant, per channel and shared, in NCHW and
# (B, L, C), float32 and bfloat16 (SPEC.md tolerances), gradcheck, torch.library.opcheck, torch.compile
# fullgraph, and the extension-build checks (the CUDA extension imports without a GPU).
cp -r "$root/tests" "$work/tests"
selection="(test_parity and not forced and (-nchw- or -blc-) and (torch.float32 or torch.bfloat16))"
selection+=" or test_gradcheck or test_opcheck or test_torch_compile_fullgraph"
selection+=" or test_cpu_extension_was_built or test_cuda_extension_was_built"
oldest=$(sed -n 's/^OLDEST_TRITON = "\(.*\)"$/\1/p' "$root/lslu_kernels/_backends.py")
older_triton='import re, sys, triton
release = lambda v: tuple(int(n) for n in re.findall(r"\d+", v)[:3])
sys.exit(release(triton.__version__) < release(sys.argv[1]))'
for version in $versions; do
  echo "== torch $version: a fresh venv, the wheel, and the tests"
  step=$SECONDS
  venv="$work/venv-$version"
  python3 -m venv "$venv"
  pip_quiet "$venv/bin/pip" install -q "torch==$version" pytest hypothesis expecttest
  # The Triton interpreter backend needs Triton >= OLDEST_TRITON; older torch releases pin an older Triton
  # (torch 2.5 pins 3.1), so the oldest supported Triton goes beside them in a folder of its own, as in
  # .ci/run's Triton-3.6 step, and wins on PYTHONPATH.
  extra=""
  if ! "$venv/bin/python" -c "import triton" 2> /dev/null; then  # a CPU build of torch comes without Triton
    pip_quiet "$venv/bin/pip" install -q "triton>=$oldest"
  elif ! "$venv/bin/python" -c "$older_triton" "$oldest"; then
    pip_quiet "$venv/bin/pip" install -q --no-deps --target "$venv/triton-$oldest" "triton==$oldest" "numpy<2.4"
    extra="$venv/triton-$oldest"
  fi
  pip_quiet "$venv/bin/pip" install -q "$wheel"  # its dependencies: torch (installed, kept) and numpy
  (cd "$work" && PYTHONPATH="$extra" TRITON_INTERPRET=1 "$venv/bin/python" - "$version" << 'EOF'
import sys

import torch
import triton

import lslu_kernels as lk

assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert "site-packages" in lk.__file__, f"lslu_kernels imported from {lk.__file__}, not the installed wheel"
available = lk.available_backends()
print(f"torch {torch.__version__}, triton {triton.__version__}, lslu_kernels from {lk.__file__}")
print(f"available backends: {available}; unavailable: {lk.unavailable_backends()}")
assert {"cpu", "triton", "reference"} <= set(available), f"a backend is missing: {lk.unavailable_backends()}"
EOF
  )
  run_tests() { (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$work" "$@"); }
  if [ -z "$extra" ]; then
    run_tests tests/test_activations.py tests/test_build.py -k "$selection"
  else
    # torch's Inductor imports the Triton it was released with (torch 2.5's fails on 3.6: no triton_key), so
    # torch.compile is tested without the extra Triton (the cpu backend), everything else with it.
    PYTHONPATH="$extra" run_tests tests/test_activations.py tests/test_build.py \
      -k "($selection) and not test_torch_compile_fullgraph"
    run_tests tests/test_activations.py -k test_torch_compile_fullgraph
  fi
  rm -rf "$venv"
  echo "torch $version: passed in $((SECONDS - step)) s"
done
echo "== one wheel served torch $versions ($((SECONDS - start)) s in all)"
