"""``semmae_lab.timing``: functions timed in turns, windows of steps, and the rates a run logged."""

from __future__ import annotations

import json
import time

import pytest

from semmae_lab.timing import logged, logged_rate, mean_time, median_times, step_times


def test_median_times_runs_the_functions_in_turns_after_warmup():
    calls = []
    fast, slow = (lambda: calls.append("fast")), (lambda: (calls.append("slow"), time.sleep(0.01)))
    t_fast, t_slow = median_times([fast, slow], repeats=3, warmup=2)
    assert calls == ["fast"] * 2 + ["slow"] * 2 + ["fast", "slow"] * 3
    assert t_slow >= 0.01 > t_fast


def test_step_times_counts_steps_from_start_and_times_each_or_the_window():
    seen = []
    times = step_times(lambda i: seen.append(i), steps=3, warmup=2, start=10)
    assert seen == [10, 11, 12, 13, 14] and len(times) == 3
    seen.clear()
    (window,) = step_times(lambda i: (seen.append(i), time.sleep(0.005)), steps=4, each=False)
    assert seen == [0, 1, 2, 3] and window >= 0.02


def test_mean_time_is_the_window_over_the_calls():
    assert mean_time(lambda: time.sleep(0.005), iters=3) == pytest.approx(0.005, abs=0.004)


def test_logged_drops_warmup_records_and_rates_come_from_steps_and_times(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [
        {"step": s, "loss": 1.0, "img_per_s": float(s), "time": 100.0 + s / 2} for s in (5, 10, 15, 20)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in [{"step": 0, "event": "start"}] + records))
    assert logged(log, "img_per_s") == [10.0, 15.0, 20.0]
    assert logged(log, "img_per_s", skip=9) == [5.0, 10.0, 15.0, 20.0]  # nothing would be left: all kept
    # steps 10 -> 20 (10 steps of 8 images) in 5 s
    assert logged_rate(log, batch_size=8) == pytest.approx(16.0)
