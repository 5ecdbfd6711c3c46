#!/usr/bin/env bash
# Regenerates experiments/results/{bench_rollout,scripted_experts}.md (run from anywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
clean() { grep -v "robosuite WARNING\|robosuite INFO\|it/s\]\|ep/s\]\|s/ep\]" | sed 's/\r.*//' ; }
{
  echo "# Rollout throughput"
  echo
  echo "Command: \`python -m experiments.bench_rollout task=lift\` (2-core machine, software EGL rendering; $(date -u +%F))"
  echo
  echo '```'
  .venv/bin/python -m experiments.bench_rollout task=lift 2>/dev/null | clean
  echo '```'
} > experiments/results/bench_rollout.md
{
  echo "# Scripted experts: nominal success"
  echo
  for task in lift can; do
    echo "Command: \`python -m policies.evaluate policy=scripted task=$task episodes=50\` ($(date -u +%F))"
    echo
    echo '```'
    .venv/bin/python -m policies.evaluate policy=scripted task=$task episodes=50 2>/dev/null | clean
    echo '```'
    echo
  done
} > experiments/results/scripted_experts.md
