"""The watch checker: same events in the same order on the overlap, no gaps."""

from __future__ import annotations

from synod.check.watch_checker import WatchEvent, WatchLog, check_watches


def ev(*revs: int, key: str = "w/a") -> list[WatchEvent]:
    return [WatchEvent(r, key, "put") for r in revs]


def test_watchers_agreeing_on_the_overlap_are_valid() -> None:
    logs = [
        WatchLog("w1", 1, ev(3, 5, 8, 9)),
        WatchLog("w2", 4, ev(5, 8)),  # started later, stopped earlier
        WatchLog("w3", 6, ev(8, 9, 12)),
    ]
    r = check_watches(logs)
    assert r.verdict == "valid", r.problems
    assert (r.counts["watchers"], r.counts["revisions"]) == (3, 5)


def test_gap_is_caught() -> None:
    r = check_watches([WatchLog("w1", 1, ev(3, 5, 8, 9)), WatchLog("w2", 1, ev(3, 8, 9))])
    assert r.verdict == "invalid"
    assert r.counts["gaps"] == 1
    assert "w2" in r.problems[0] and "'w/a'@5" in r.problems[0]


def test_gap_at_the_tail_counts_only_up_to_end_revision() -> None:
    short = WatchLog("w2", 1, ev(3, 5))
    assert check_watches([WatchLog("w1", 1, ev(3, 5, 8)), short]).verdict == "valid"
    short.end_revision = 9  # it claims to have everything through 9
    assert check_watches([WatchLog("w1", 1, ev(3, 5, 8)), short]).verdict == "invalid"


def test_duplicates_and_reordering_are_caught() -> None:
    r = check_watches([WatchLog("w1", 1, ev(3, 5, 5, 8)), WatchLog("w2", 1, ev(3, 8, 5))])
    assert r.verdict == "invalid"
    assert r.counts["duplicates"] == 1 and r.counts["reordered"] == 1


def test_disagreeing_event_types_are_caught() -> None:
    other = [WatchEvent(3, "w/a", "delete")]
    r = check_watches([WatchLog("w1", 1, ev(3)), WatchLog("w2", 1, other)])
    assert r.verdict == "invalid" and r.counts["conflicts"] == 1


def test_event_before_the_start_revision_is_caught() -> None:
    r = check_watches([WatchLog("w1", 4, ev(3, 5))])
    assert r.verdict == "invalid" and r.counts["too_early"] == 1


def test_restarted_watcher_must_resume_without_a_gap() -> None:
    before = WatchLog("w2", 1, ev(3, 5))
    resumed_ok = WatchLog("w2", 6, ev(8, 9))
    resumed_late = WatchLog("w2", 6, ev(9))  # lost 8 across the restart
    reference = WatchLog("w1", 1, ev(3, 5, 8, 9))
    assert check_watches([reference, before, resumed_ok]).verdict == "valid"
    r = check_watches([reference, before, resumed_late])
    assert r.verdict == "invalid" and r.counts["gaps"] == 1


def test_watchers_of_other_prefixes_are_not_held_to_each_others_keys() -> None:
    a = WatchLog("wa", 1, ev(3, 5, key="w/a"), prefix="w/a")
    b = WatchLog("wb", 1, ev(4, key="w/b"), prefix="w/b")
    both = WatchLog("all", 1, ev(3, 5, key="w/a") + ev(4, key="w/b"), prefix="w/")
    both.events.sort(key=lambda e: e.revision)
    assert check_watches([a, b, both]).verdict == "valid"


def test_record_round_trip() -> None:
    log = WatchLog("w1", 2, ev(3, 4), prefix="w/", end_revision=7)
    assert WatchLog.from_record(log.to_record()) == log
