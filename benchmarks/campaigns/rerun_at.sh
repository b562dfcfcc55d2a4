#!/usr/bin/env bash
# Rerun a diagnostic plan with the code of an old commit (issue 40: the same seeds at two pinned commits).
# campaign.py refuses an uncommitted plan, so the plan goes onto a branch at COMMIT that adds only that file; the
# campaign then runs from that branch's worktree, its records and report under WORK/results.
#   benchmarks/campaigns/rerun_at.sh 88b2650 benchmarks/campaigns/diagnostics/sd-check.yaml [WORK]
#   benchmarks/campaigns/rerun_at.sh 7a76719 benchmarks/campaigns/diagnostics/sd-check.yaml [WORK]
# Resumable: run it again with the same arguments.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 COMMIT PLAN.yaml [WORK]" >&2; exit 2; }
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
commit=$(git -C "$MAIN" rev-parse --short=7 "$1^{commit}")
plan=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
name=$(basename "$plan" .yaml)
wt="$MAIN/../wt-$name-$commit"
if [ ! -d "$wt" ]; then
  git -C "$MAIN" worktree add -q -b "$name-$commit" "$wt" "$commit"
  cp "$plan" "$wt/benchmarks/campaigns/$name.yaml"
  git -C "$wt" add "benchmarks/campaigns/$name.yaml"
  git -C "$wt" commit -qm "$name: diagnostic plan at $commit"
fi
work=${3:-$MAIN/../campaign-runs/$name-$commit}
echo "$name at $commit: code in $wt, work in $work"
cd "$wt" && PYTHONPATH="$wt/src" python benchmarks/campaign.py "benchmarks/campaigns/$name.yaml" \
  --work "$work" --out "$work/results"
