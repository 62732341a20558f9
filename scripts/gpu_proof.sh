#!/usr/bin/env bash
# The GPU proof: does GPU utilization decide when the node spills? One call on the lent GPU
# machine (about 8 of its 10 minutes), rehearsed here on CPU with CUDA off.
#
#   scripts/gpu_proof_prepare.sh                    # here, with PyPI: var/gpu-proof/carry
#   bash scripts/gpu_proof.sh                       # there (device call, carry var/gpu-proof/carry)
#   scripts/gpu_proof_prepare.sh --rehearsal && GPU_PROOF_CUDA=0 \
#     GPU_PROOF_PYTHON=python3.12 GPU_PROOF_EXTRA_WHEELS=var/gpu-proof/rehearsal \
#     scripts/gpu_proof.sh                          # the CPU rehearsal
#
# Steps (each timed into $OUT/steps.log):
#   1. a venv over the machine's own Python (--system-site-packages: its torch, numpy, aiohttp,
#      nvidia-ml-py) plus the node's missing dependencies from the carried wheels, no index;
#   2. llama-cpp-python built from the carried, slimmed sdist: CUDA for Hopper (sm_90), or CPU;
#   3. a random-weight Llama GGUF written with the gguf-py and tokenizer vendored in that sdist
#      (scripts/gpu_proof_model.py; ~0.9 B parameters on the GPU, a toy on CPU);
#   4. the node with NVML on, the llama.cpp engine on the GPU (all layers offloaded: llama.cpp's
#      default), an `auto` route spilling to the recording fake provider on loopback;
#   5. load past saturation in stages (scripts/gpu_proof_drive.py): every spill decision with
#      its reason, next to the node's GPU utilization and power readings -> $OUT/gpu_proof.json;
#   6. scripts/gpu_check.py (NVML idle vs a torch load) -> $OUT/gpu_check.json.
# Everything listens on 127.0.0.1 and stops with the script.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARRY=${GPU_PROOF_CARRY:-var/gpu-proof/carry}
WORK=${GPU_PROOF_WORK:-var/gpu-proof/work}
OUT=${OUT:-var/gpu-proof/out}
PYTHON=${GPU_PROOF_PYTHON:-python3}
if [ -z "${GPU_PROOF_CUDA:-}" ]; then
  GPU_PROOF_CUDA=$(command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)
fi
if [ "$GPU_PROOF_CUDA" = 1 ]; then
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
  MODEL_ARGS=${GPU_PROOF_MODEL_ARGS:---hidden 2048 --layers 16 --ffn 5632 --heads 16 --kv-heads 4}
  MAX_BATCH=${GPU_PROOF_MAX_BATCH:-32}
  STAGES=${GPU_PROOF_STAGES:-1,4,16,32,64,128}
  STAGE_S=${GPU_PROOF_STAGE_S:-15}
  SLO_MS=${GPU_PROOF_SLO_MS:-1500}
else
  CMAKE_ARGS="-DGGML_CUDA=off -DLLAVA_BUILD=OFF"
  MODEL_ARGS=${GPU_PROOF_MODEL_ARGS:---hidden 256 --layers 2 --ffn 512 --heads 4 --kv-heads 2}
  MAX_BATCH=${GPU_PROOF_MAX_BATCH:-2}
  STAGES=${GPU_PROOF_STAGES:-1,4,16,48}
  STAGE_S=${GPU_PROOF_STAGE_S:-6}
  SLO_MS=${GPU_PROOF_SLO_MS:-400}
fi
mkdir -p "$WORK" "$OUT"
STEPS="$OUT/steps.log"
: > "$STEPS"
T0=$(date +%s)
step() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$STEPS"; }
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "cuda=$GPU_PROOF_CUDA python=$($PYTHON --version 2>&1) cores=$(nproc)"
[ -d "$CARRY/wheels" ] || { echo "no $CARRY: run scripts/gpu_proof_prepare.sh first" >&2; exit 2; }
SDIST=$(ls "$CARRY"/llama_cpp_python-*-slim.tar.gz)

# 1. Python environment.
step "1 venv + carried wheels"
[ -x "$WORK/venv/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --no-index --find-links "$CARRY/wheels" "$CARRY"/wheels/*.whl
if [ -n "${GPU_PROOF_EXTRA_WHEELS:-}" ]; then  # the rehearsal: what the GPU machine has
  "$PY" -m pip install -q --no-index --find-links "$GPU_PROOF_EXTRA_WHEELS" \
    "$GPU_PROOF_EXTRA_WHEELS"/*.whl
fi
export PYTHONPATH="$ROOT/server"
"$PY" -c "import fastapi, sqlalchemy, aiosqlite, pydantic_settings, orjson, phonenumbers, stdnum, \
prometheus_client, tenacity, httpx, aiohttp, pynvml, numpy, uvicorn, uvloop, httptools"

# 2. llama-cpp-python (skipped when this venv already has it and GPU_PROOF_REUSE_LLAMA=1).
if [ "${GPU_PROOF_REUSE_LLAMA:-0}" = 1 ] && "$PY" -c "import llama_cpp" 2>/dev/null; then
  step "2 llama-cpp-python: reusing the installed build"
else
  step "2 build llama-cpp-python ($CMAKE_ARGS)"
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PY" -m pip install -q --no-index --no-build-isolation --find-links "$CARRY/wheels" \
    --force-reinstall --no-deps "$SDIST" > "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; exit 1; }
fi
"$PY" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'gpu offload:', \
llama_cpp.llama_supports_gpu_offload())" | tee -a "$STEPS"

# 3. The model.
step "3 random-weight Llama GGUF"
SRC="$WORK/src"
if [ ! -d "$SRC" ]; then
  mkdir -p "$SRC"
  tar -xzf "$SDIST" -C "$SRC" --wildcards '*/vendor/llama.cpp/gguf-py/*' \
    '*/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf'
fi
VENDOR=$(ls -d "$SRC"/*/vendor/llama.cpp)
MODEL="$WORK/model.gguf"
# shellcheck disable=SC2086
PYTHONPATH="$VENDOR/gguf-py" "$PY" scripts/gpu_proof_model.py \
  --vocab "$VENDOR/models/ggml-vocab-llama-spm.gguf" --out "$MODEL" $MODEL_ARGS | tee -a "$STEPS"

# 4. The fake provider and the node.
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
FAKE_PORT=$(free_port); NODE_PORT=$(free_port); ENGINE_PORT=$(free_port)
step "4 fake provider :$FAKE_PORT, node :$NODE_PORT (engine :$ENGINE_PORT, max_batch $MAX_BATCH)"
"$PY" -m spillgate.fakes.provider --port "$FAKE_PORT" --latency-ms 300 \
  > "$OUT/provider.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/node.yaml" <<EOF
server: {host: 127.0.0.1, port: $NODE_PORT}
models_dir: $ROOT/models
local:
  - {name: local-gpu, model: smollm2, engine: llamacpp, model_path: $MODEL, port: $ENGINE_PORT,
     n_ctx: 1024, max_batch: $MAX_BATCH, max_queue: 512, startup_timeout_s: 300}
providers:
  - {name: openai, kind: openai, base_url: "http://127.0.0.1:$FAKE_PORT/v1",
     api_key_env: FAKE_OPENAI_KEY, models: [gpt-4o-mini]}
routes:
  - {name: auto, policy: auto, local: smollm2, paid: openai/gpt-4o-mini, ttft_slo_ms: $SLO_MS}
telemetry: {nvml: true, interval_s: 0.25, stale_after_s: 2.0, min_dwell_s: 1.0}
ledger: {dsn: "sqlite+aiosqlite:///$ROOT/$WORK/ledger.db"}
cost: {hardware_profile: h100-leased, gpus: 1}
EOF
rm -f "$WORK/ledger.db"
FAKE_OPENAI_KEY=sk-fake-gpu-proof "$PY" -m spillgate serve --config "$WORK/node.yaml" \
  > "$OUT/node.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$NODE_PORT/readyz" > /dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -sf "http://127.0.0.1:$NODE_PORT/readyz" > /dev/null || { tail -30 "$OUT/node.log"; exit 1; }
# /readyz passes as soon as the paid fake answers; the proof needs the local engine up too.
for _ in $(seq 1 600); do
  if curl -sf "http://127.0.0.1:$NODE_PORT/metrics" \
      | grep -q '^spillgate_backend_up{backend="local-gpu"} 1'; then break; fi
  sleep 0.5
done
step "node ready, engine up"

# 5. Load past saturation.
step "5 drive stages $STAGES x ${STAGE_S}s"
"$PY" scripts/gpu_proof_drive.py --node "http://127.0.0.1:$NODE_PORT/v1" \
  --out "$OUT/gpu_proof.json" --stages "$STAGES" --stage-s "$STAGE_S" | tee -a "$STEPS"

# 6. NVML on its own (idle vs a torch load); prints why and exits 0 without a GPU.
step "6 gpu_check"
cleanup
PIDS=()
"$PY" scripts/gpu_check.py --out "$OUT/gpu_check.json" | tee -a "$STEPS" || true
step "done: $OUT/gpu_proof.json"
