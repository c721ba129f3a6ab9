"""The progress/cancel contract: one shape of progress, one drain."""

from __future__ import annotations

from napari_cellseg.progress import Progress, drain, stopped


def _job(n: int, should_stop=None):
    for k in range(1, n + 1):
        if stopped(should_stop):
            return None
        yield Progress(k, n, f"item{k}")
    return f"{n} done"


def test_drain_returns_the_generators_value_and_hands_on_each_progress():
    seen: list[Progress] = []
    assert drain(_job(3), seen.append) == "3 done"
    assert seen == [(1, 3, "item1"), (2, 3, "item2"), (3, 3, "item3")]
    done, total, name = seen[-1]  # a tuple: unpacks as the old (done, total, name) did
    assert (done, total, name) == (3, 3, "item3")


def test_drain_without_a_callback_and_a_stopped_job_returns_none():
    assert drain(_job(2)) == "2 done"
    calls = []
    assert drain(_job(5, lambda: calls.append(1) or len(calls) > 2)) is None
    assert len(calls) == 3  # checked before every step, stopped before the third


def test_stopped_treats_none_as_never():
    assert stopped(None) is False
    assert stopped(lambda: True) is True


def test_eta_from_the_pace_since_the_first_step():
    from napari_cellseg.progress import Eta, duration

    now = [100.0]
    eta = Eta(clock=lambda: now[0])
    assert eta.text(1, 10) == ""  # the first step starts the clock (model loading not counted)
    now[0] += 20
    assert eta.text(3, 10) == ", about 70 s left"  # 10 s per step, 7 steps to go
    now[0] += 1000
    assert eta.text(5, 10) == ", about 21 min left"  # 1020 s for 4 steps, 5 to go
    assert eta.text(10, 10) == ""
    assert eta.text(1, 4) == ""  # a new job (another total) restarts the clock
    assert duration(3 * 3600 + 300) == "3 h 5 min" and duration(0.2) == "1 s"
