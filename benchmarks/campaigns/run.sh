#!/usr/bin/env bash
# Start or resume the evidence campaigns of issue 24, each from a worktree pinned at the commit its
# benchmarks/results/campaign-<plan>/campaign.json records (a campaign not started yet pins this checkout's HEAD).
# Stop it any time (Ctrl-C, SIGTERM, end of session); run it again to resume: finished runs are skipped.
#   benchmarks/campaigns/run.sh                    # every plan in order (PLANS below)
#   CAMPAIGN_WORK=/scratch/campaigns benchmarks/campaigns/run.sh mechanism-synth
set -euo pipefail
MAIN=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${CAMPAIGN_WORK:-$MAIN/../campaign-runs}
PLANS=("$@")
[ ${#PLANS[@]} -gt 0 ] || PLANS=(mechanism-synth imagenette-p4keep mechanism-synth-24 imagenette-alpha-cap)
for plan in "${PLANS[@]}"; do
  state="$MAIN/benchmarks/results/campaign-$plan/campaign.json"
  if [ -f "$state" ]; then
    commit=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['commit'])" "$state")
  else
    commit=$(git -C "$MAIN" rev-parse HEAD)
  fi
  wt="$MAIN/../wt-campaign-${commit:0:12}"
  [ -d "$wt" ] || git -C "$MAIN" worktree add -q --detach "$wt" "$commit"
  echo "campaign $plan: code at ${commit:0:12} ($wt), work in $WORK/$plan"
  (cd "$wt" && PYTHONPATH="$wt/src" python benchmarks/campaign.py "benchmarks/campaigns/$plan.yaml" \
      --work "$WORK/$plan" --out "$MAIN/benchmarks/results")
  # the runs come from the pin; the report is drawn again by this checkout's report code, so a finished campaign's
  # report does not fall back to the pin's layout each time this script passes over it (the numbers are the records')
  (cd "$MAIN" && PYTHONPATH="$MAIN/src" python benchmarks/campaign.py "benchmarks/campaigns/$plan.yaml" \
      --work "$WORK/$plan" --out "$MAIN/benchmarks/results" --report-only)
done
