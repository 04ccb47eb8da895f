"""What `claims-pipeline demo` prints when claims_sync fails: the failed step and check."""

import dagster as dg

from claims_pipeline.demo.run import failure_summary


@dg.asset
def day_claims() -> int:
    return 0


@dg.asset_check(asset=day_claims)
def claims_balance() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


@dg.asset_check(asset=day_claims)
def claims_present() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset
def day_import() -> None:
    raise RuntimeError("the import API refused the batch")


def test_names_the_failed_check_and_the_failed_step():
    result = dg.materialize(
        [day_claims, claims_balance, claims_present, day_import], raise_on_error=False
    )
    assert not result.success
    summary = failure_summary(result.all_events)
    assert 'while executing op "day_import"' in summary
    assert "check claims_balance failed" in summary
    assert "claims_present" not in summary


def test_passed_checks_are_not_named():
    result = dg.materialize([day_claims, claims_present])
    assert failure_summary(result.all_events) == "see the run in the Dagster UI"
