"""The Dagster shell: assets, checks, schedule and resources around the pure core."""

import warnings

import dagster as dg

# BackfillPolicy.single_run() is what makes a UI backfill one run (docs/deploying.md); dagster marks
# the parameter beta. We depend on it deliberately, so its warning is not news to operators.
warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy`", category=dg.BetaWarning)
