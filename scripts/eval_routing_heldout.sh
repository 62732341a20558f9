#!/usr/bin/env bash
# Reproduce the tables of docs/routing-eval.md: train a router on GSM8K + one half of the
# MMLU subjects (a seeded split), evaluate it on the other half (subjects it never saw),
# then the reverse. Routers and scores go to var/, reports to docs/measurements/.
#   DATA=../shared/data/routing-evals.jsonl SEED=0 scripts/eval_routing_heldout.sh
set -euo pipefail
DATA=${DATA:-../shared/data/routing-evals.jsonl}
SEED=${SEED:-0}
OUT=${OUT:-docs/measurements/routing-eval}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT" var
for train in 1 2; do
  held=$((3 - train))
  name="seed${SEED}-train${train}-heldout${held}"
  "$BIN/spillgate" router train --data "$DATA" --output "var/router-$name.json" \
    --split-seed "$SEED" --half "$train"
  for format in json md; do
    "$BIN/spillgate" eval routing --data "$DATA" --router "var/router-$name.json" \
      --split-seed "$SEED" --half "$held" --seed "$SEED" --scores "var/scores-$name.jsonl" \
      --format "$format" --output "$OUT/$name.$format"
  done
done
