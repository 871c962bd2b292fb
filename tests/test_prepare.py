"""What mcc run checks and advises before it creates anything."""
from __future__ import annotations

from mcc.driver.prepare import oversubscription


def test_more_local_workers_than_cores_is_a_warning_not_a_refusal() -> None:
    warning = oversubscription("local", 4, cores=2)
    assert warning is not None and "4 local workers on 2 cores" in warning and "--workers 2" in warning
    assert oversubscription("local", 2, cores=2) is None
    assert oversubscription("aws", 64, cores=2) is None  # the workers are instances, not this machine's cores


def test_one_claim_never_takes_more_than_half_a_workers_share() -> None:
    from mcc.remote.worker import MAX_BATCH, claim_limit

    assert claim_limit(9, 2) == 2  # the small run where one worker took all 9 subproblems
    assert claim_limit(3, 2) == 1 and claim_limit(1, 8) == 1
    assert claim_limit(1_000_000, 4) == MAX_BATCH
