"""The member's metrics: counted in plain fields, exposed in Prometheus' text format."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from synod.consensus.metrics import LatencyHistogram, MemberMetrics


def _samples(m: MemberMetrics) -> dict[tuple[str, str], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_histogram_buckets_are_inclusive_and_cumulative() -> None:
    h = LatencyHistogram(bounds=(0.001, 0.01))
    for v in (0.0005, 0.001, 0.002, 0.01, 3.0):
        h.observe(v)
    fam = h.family("x_seconds", "doc")
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name == "x_seconds_bucket"}
    # 0.001 counts in le="0.001" (less than or equal), every bucket includes the ones below.
    assert buckets == {"0.001": 2, "0.01": 4, "+Inf": 5}
    count = next(s.value for s in fam.samples if s.name == "x_seconds_count")
    total = next(s.value for s in fam.samples if s.name == "x_seconds_sum")
    assert count == 5 and total == 0.0005 + 0.001 + 0.002 + 0.01 + 3.0


def test_scrape_shows_what_was_counted() -> None:
    m = MemberMetrics()
    m.observe_fsync(0.0003)
    m.observe_apply(0.00002)
    m.proposal_failed(2)
    m.proposals_committed += 7
    m.read_round_started()
    m.renewal_forwards += 3
    m.term, m.commit_index = 3, 41
    s = _samples(m)
    assert s[("synod_raft_term", "")] == 3
    assert s[("synod_raft_commit_index", "")] == 41
    assert s[("synod_proposals_committed_total", "")] == 7
    assert s[("synod_proposals_failed_total", "")] == 2
    assert s[("synod_read_index_rounds_total", "")] == 1
    assert s[("synod_lease_renewal_forwards_total", "")] == 3
    assert s[("synod_wal_fsync_seconds_bucket", "0.0005")] == 1
    assert s[("synod_wal_fsync_seconds_bucket", "0.00025")] == 0
    assert s[("synod_apply_seconds_count", "")] == 1
