#!/usr/bin/env bash
# Every pre-registered study, one after another, in the order their results are needed:
#
#   bash benchmarks/run_studies.sh            # from the repository root; resumes wherever it stopped
#   bash benchmarks/run_studies.sh sam_grid   # start at a step (its name below)
#
# Each step is a resumable command: a finished run is never redone, so after a kill the same line picks up
# at the first unfinished run. One heavy job at a time (the machine's cores are all used by one run).
# Stops at the first failing step. The completion comparison (configs/replay_completion.yaml) is not here: the
# dose pilot's pre-registered rule selected no budget (benchmarks/results/replay_dose_pilot/sweep/compare/
# selection.json), so by that rule it is not run.
set -euo pipefail
export FORGETSCOPE_NO_PROGRESS=1

steps=(
  "smollm2_study       python benchmarks/replication_study.py configs/studies/smollm2.yaml"
  "smollm2_analysis    python benchmarks/study_analysis.py configs/studies/smollm2.yaml"
  "smollm2_tables      python benchmarks/study_tables.py configs/studies/smollm2.yaml"
  "sam_grid            forgetscope compare configs/sam_rho_grid.yaml"
  "dose_pilot          forgetscope compare configs/replay_dose_pilot.yaml"
  "dose_selection      python benchmarks/dose_selection.py configs/replay_dose_pilot.yaml"
  "scaling_study       forgetscope scaling configs/scaling_study.yaml"
  "scaling_secondary   forgetscope scaling configs/scaling_study.yaml --refit --holdout largest_p"
  "scaling_calibration python benchmarks/scaling_criteria_calibration.py --jobs 2"
  "scaling_tables      python benchmarks/scaling_tables.py configs/scaling_study.yaml"
  "gemma3_pilot        python benchmarks/regime_pilot.py configs/regimes/gemma3.yaml"
  "gemma3_pilot_tables python benchmarks/regime_tables.py configs/regimes/gemma3.yaml"
  "gemma3_base_answers python benchmarks/base_answers.py configs/regimes/gemma3.yaml"
)
# The Gemma-3 study (configs/studies/gemma3.yaml) is not here: its pilot's pre-registered rule selected no
# regime (benchmarks/results/regimes/gemma3/selection.json), so by that rule it is not run, and
# benchmarks/replication_study.py refuses to start it (exit 2).

start="${1:-}"
if [[ -n "$start" ]] && ! printf '%s\n' "${steps[@]}" | awk '{print $1}' | grep -qx "$start"; then
  echo "error: no step named '$start'; steps: $(printf '%s\n' "${steps[@]}" | awk '{print $1}' | tr '\n' ' ')" >&2
  exit 2
fi
started=$([[ -z "$start" ]] && echo 1 || echo 0)
for step in "${steps[@]}"; do
  name="${step%% *}"
  cmd="$(echo "${step#"$name"}" | sed 's/^ *//')"
  [[ "$name" == "$start" ]] && started=1
  [[ "$started" == 1 ]] || continue
  echo "== $(date -u +%FT%TZ) $name: $cmd"
  $cmd
done
echo "== $(date -u +%FT%TZ) all steps done"
