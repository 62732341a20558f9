#!/usr/bin/env bash
# Build what scripts/gpu_proof.sh needs on the lent GPU machine, which has no package index:
# the node's dependencies as CPython 3.12 manylinux wheels, the llama-cpp-python build backend,
# and llama-cpp-python's sdist slimmed to fit the 64 MiB a device call may carry.
#
#   scripts/gpu_proof_prepare.sh            # -> var/gpu-proof/carry (ignored by git)
#   scripts/gpu_proof_prepare.sh --rehearsal  # also var/gpu-proof/rehearsal: what the GPU
#                                            # machine has and a bare CPython 3.12 lacks
#
# The GPU machine already has Python 3.12, PyTorch, transformers, nvidia-ml-py, aiohttp, CMake,
# ninja and nvcc; whatever else the node imports comes from here. Run it where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_CPP_VERSION=0.3.36
CARRY=var/gpu-proof/carry
PIP=${PIP:-.venv/bin/pip}
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" var/gpu-proof/dist

# 1. llama-cpp-python's sdist (76 MB) minus what a build never reads: docs, media, benches,
#    tests, examples, the test vocabularies (but Llama 2's, the proof model's tokenizer), the
#    server's web assets, a 38 MB git pack. LLAVA_BUILD=OFF at build time makes tools/
#    unnecessary too (vendor/ stays: llama.cpp's CMake adds all of it unconditionally).
sdist=var/gpu-proof/dist/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz
[ -f "$sdist" ] || "$PIP" download -q --no-deps --no-binary :all: -d var/gpu-proof/dist \
  "llama-cpp-python==$LLAMA_CPP_VERSION"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$LLAMA_CPP_VERSION"
vendor="$src/vendor/llama.cpp"
rm -rf "$src/.git" "$vendor/.git" "$vendor/docs" "$vendor/media" "$vendor/benches" \
  "$vendor/tests" "$vendor/examples" "$vendor/tools" \
  "$src/docs" "$src/examples" "$src/tests"
find "$vendor/models" -mindepth 1 ! -name 'ggml-vocab-llama-spm.gguf' -exec rm -rf {} +
# llama.cpp's CMakeLists adds these only when building standalone; keep stubs for safety.
mkdir -p "$vendor/tests" "$vendor/examples" "$vendor/tools"
tar -czf "$CARRY/llama_cpp_python-$LLAMA_CPP_VERSION-slim.tar.gz" -C "$work" \
  "llama_cpp_python-$LLAMA_CPP_VERSION"

# 2. Wheels for CPython 3.12 on x86-64 Linux: the node's runtime dependencies (less what the
#    GPU machine has), llama-cpp-python's runtime dependencies, and its build backend.
deps=$(python3 - <<'EOF'
import tomllib
have = {"aiohttp", "nvidia-ml-py"}  # on the GPU machine already
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = [d.split(";")[0].strip() for d in deps]
print(" ".join(d for d in names if d.split(">")[0].split("=")[0].split("[")[0] not in have))
EOF
)
# shellcheck disable=SC2086
"$PIP" download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$CARRY/wheels" \
  $deps "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5.0" \
  "scikit-build-core>=0.9.2" 2>&1 | grep -v "^WARNING: Location" || true
# The GPU machine has these (PyTorch's and transformers' own dependencies); carrying them
# would only take room.
# Of uvicorn's [standard] extras `spillgate serve` uses uvloop and httptools; websockets and
# watchfiles (reload) are never used.
rm -f "$CARRY"/wheels/numpy-* "$CARRY"/wheels/aiohttp-* "$CARRY"/wheels/yarl-* \
  "$CARRY"/wheels/multidict-* "$CARRY"/wheels/frozenlist-* "$CARRY"/wheels/pyyaml-* \
  "$CARRY"/wheels/websockets-* "$CARRY"/wheels/watchfiles-*

if [ "${1:-}" = --rehearsal ]; then
  rm -rf var/gpu-proof/rehearsal && mkdir -p var/gpu-proof/rehearsal
  "$PIP" download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d var/gpu-proof/rehearsal \
    numpy aiohttp nvidia-ml-py pyyaml 2>&1 | grep -v "^WARNING: Location" || true
fi
size=$(du -sb "$CARRY" | cut -f1)
echo "carry: $CARRY, $((size / 1048576)) MiB in $(find "$CARRY" -type f | wc -l) files"
if [ "$size" -gt $((60 * 1048576)) ]; then
  echo "too big to carry (a device call takes 64 MiB in all)" >&2
  exit 1
fi
