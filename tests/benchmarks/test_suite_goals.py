"""The suite's judgement of issue 16's goals, on given figures (no server runs here)."""

from __future__ import annotations

from benchmarks import suite

FULL = suite.PROFILES["full"]


def test_judge_says_how_far_a_miss_is() -> None:
    assert suite.judge(0.85, 0.9, at_most=True, unit=" x") == ("pass", "")
    assert suite.judge(0.9, 0.9, at_most=True) == ("pass", "")
    assert suite.judge(1.2, 0.9, at_most=True, unit=" x") == ("miss", "0.30 x over the goal")
    assert suite.judge(950.0, 1000, at_most=False, unit=" viewers", digits=0) == (
        "miss", "50 viewers short of the goal")
    assert suite.judge(None, 80, at_most=True) == ("miss", "nothing measured")


def test_the_full_profile_reaches_past_the_scale_and_viewer_goals() -> None:
    assert suite.SCALE_GOAL in FULL.scale_steps and FULL.scale_steps[-1] > suite.SCALE_GOAL
    assert suite.VIEWERS_GOAL in FULL.viewer_steps
    assert FULL.viewer_steps[-1] > suite.VIEWERS_GOAL
    assert list(FULL.scale_steps) == sorted(FULL.scale_steps)
    assert list(FULL.viewer_steps) == sorted(FULL.viewer_steps)


def test_scale_passes_only_at_the_goal_and_not_below_nginx() -> None:
    steps = FULL.scale_steps
    assert suite.scale_verdict(2500, 2500, steps, "full") == ("pass", [])
    assert suite.scale_verdict(3000, 2000, steps, "full") == ("pass", [])
    assert suite.scale_verdict(800, 2000, steps, "full") == (
        "miss", ["1,700 short of 2,500", "1,200 fewer than nginx-rtmp's 2,000 in this run"])
    # At the goal, but fewer than nginx-rtmp in the same run: a miss.
    assert suite.scale_verdict(2500, 3000, steps, "full") == (
        "miss", ["500 fewer than nginx-rtmp's 3,000 in this run"])
    assert suite.scale_verdict(0, 100, steps, "full")[0] == "miss"
    assert suite.scale_verdict(3000, None, steps, "full") == (
        "not measured: nginx-rtmp missing",
        ["never fewer than nginx-rtmp: not measured, nginx-rtmp missing"])
    # A quick run whose steps end below the goal does not judge it.
    assert suite.scale_verdict(200, 200, (50, 100, 200), "quick") == (
        "not judged: the quick run stops at 200", [])


def test_viewers_pass_at_the_goal() -> None:
    steps = FULL.viewer_steps
    assert suite.viewers_verdict(1000, True, steps, "full") == ("pass", [])
    assert suite.viewers_verdict(1200, False, steps, "full") == ("pass", [])
    assert suite.viewers_verdict(200, True, steps, "full") == ("miss", ["800 short of 1,000"])
    assert suite.viewers_verdict(None, True, steps, "full") == (
        "miss", ["1,000 short of 1,000"])
    assert suite.viewers_verdict(100, False, (25, 50, 100), "quick") == (
        "not judged: the quick run stops at 100", [])
