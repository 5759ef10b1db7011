"""The generalisation report (`circuit-atlas experiments toyworld`) on a CI-sized subset of the
shipped toy world: rates and Wilson intervals against a hand count, held-out cities marked, rule
failures counted as failures, the collapse flag, the JSON and the figure written. The full report
(every pair) takes minutes and is run by hand; its figures are in examples/README.md."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math

import pytest

from circuit_atlas import ReplacementModel
from circuit_atlas.cli import main
from circuit_atlas.interventions.intervene import COLLAPSE_FACTOR
from circuit_atlas.toyworld import experiments as ex
from circuit_atlas.toyworld import world


def test_wilson_interval_by_hand():
    # p = 3/4, z = 1.96: centre (0.75 + 0.4802) / 1.9604, half 1.96 sqrt(0.046875 + 0.060020) / 1.9604
    lo, hi = ex.wilson(3, 4)
    assert lo == pytest.approx(0.30064, abs=1e-4) and hi == pytest.approx(0.95441, abs=1e-4)
    assert ex.wilson(0, 4)[0] == 0.0 and ex.wilson(0, 4)[1] == pytest.approx(0.48990, abs=1e-4)
    assert ex.wilson(4, 4)[1] == 1.0 and ex.wilson(4, 4)[0] == pytest.approx(0.51010, abs=1e-4)
    assert ex.wilson(0, 0) == (0.0, 1.0)
    lo, hi = ex.wilson(50, 100)  # symmetric about 0.5, inside the normal interval's +-0.098
    assert lo + hi == pytest.approx(1.0) and 0.40 < lo < 0.41
    with pytest.raises(ValueError, match="between 0 and n"):
        ex.wilson(5, 4)


def test_summarize_counts_by_hand():
    trials = [
        ex.Trial("a", " x", True, " x", 0.9, 0.9, heldout=True),
        ex.Trial("b", " x", False, " y", 0.5, 0.2, heldout=False),
        ex.Trial("c", " x", False, " z", 0.0004, 0.0001, collapsed=True, heldout=False),
        ex.Trial("d", " x", False, heldout=True, error="empty"),
    ]
    s = ex.summarize(trials)
    assert (s["n"], s["successes"], s["rate"]) == (4, 1, 0.25) and "by_language" not in s
    assert s["wilson95"] == list(ex.wilson(1, 4))
    assert s["median_p_expected"] == pytest.approx(0.2)  # of the three that ran
    assert (s["collapsed"], s["rule_failed"]) == (1, 1)
    assert (s["heldout"]["n"], s["heldout"]["successes"], s["trained"]["n"], s["trained"]["rate"]) == (2, 1, 2, 0.0)


@functools.cache
def toyworld() -> ReplacementModel:
    return ReplacementModel.from_pretrained("toyworld", "toyworld-clt")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The CLI on the papers' four cities and four target regions, first opposite pair."""
    out = tmp_path_factory.mktemp("experiments")
    argv = ["experiments", "toyworld", "--cities", "showcase", "--targets", "showcase", "--concepts", "1",
            "--out", str(out), "--no-progress"]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


def test_the_report_is_written_and_its_rates_match_a_hand_count(report):
    report, _ = report
    data = json.loads((report / "experiments-toyworld-clt.json").read_text())
    assert (data["format"], data["version"], data["transcoders"]) == (ex.FORMAT, ex.VERSION, "toyworld-clt")
    for ext in ("png", "svg"):
        assert (report / f"experiments-toyworld-clt.{ext}").stat().st_size > 1000
    swaps = data["trials"]["two_hop.swap_whole"]
    assert len(swaps) == 4 * 3  # 4 cities x the 3 showcase regions other than its own
    assert all(t["heldout"] for t in swaps)  # the showcase cities are always held out
    for name, trials in data["trials"].items():
        s = data["experiments"][name]
        k = sum(t["ok"] for t in trials)
        assert (s["n"], s["successes"]) == (len(trials), k)
        assert s["wilson95"] == pytest.approx(list(ex.wilson(k, len(trials))))
        assert s["collapsed"] == sum(t["collapsed"] for t in trials)
        for t in trials:
            if t["top"] is not None:  # the flag is the top-1 probability against COLLAPSE_FACTOR / vocab
                assert t["collapsed"] == (t["top_p"] < COLLAPSE_FACTOR / len(toyworld().tokenizer))
                assert t["ok"] == ((t["top"] != t["expected"]) if "region_x" in name else (t["top"] == t["expected"]))
    dallas = {t["item"]: t for t in swaps if t["item"].startswith("Dallas")}
    assert dallas["Dallas -> California"]["top"] == " Sacramento" and dallas["Dallas -> California"]["ok"]
    assert dallas["Dallas -> California"]["p_expected"] == pytest.approx(0.22, abs=0.01)  # examples/README.md
    french = {t["item"]: t for t in data["trials"]["multilingual.language_off_x-2"]}["fr:petit"]
    assert french["top"] == " big" and french["ok"]
    assert len(data["trials"]["multilingual.language_off_x-2"]) == 3 * 2  # 3 languages x (small, big)


def test_the_cli_prints_rates_with_intervals(report):
    folder, out = report
    data = json.loads((folder / "experiments-toyworld-clt.json").read_text())
    s = data["experiments"]["two_hop.swap_whole"]
    line = next(line for line in out.splitlines() if line.startswith("two_hop.swap_whole"))
    lo, hi = s["wilson95"]
    assert f"{100 * s['rate']:.0f}%" in line and f"{100 * lo:.0f}%-{100 * hi:.0f}%" in line
    assert "95% CI" in out and "held-out" in out


def test_a_rule_that_cannot_hold_is_a_counted_failure():
    """ "long" is both English and French: the French prompt's code-switched contrast prompt is the
    prompt itself, so the language rule raises; the trial counts as a failure, with the reason."""
    runner = ex.Runner(toyworld(), progress=False)
    long_pair = next(i for i, c in enumerate(world.OPPOSITES) if c[0][0] == "long")
    ex.run_multilingual(runner, [long_pair])
    off = {t.item: t for t in runner.trials["multilingual.language_off_x-2"]}
    assert not off["fr:long"].ok and "prompt itself" in off["fr:long"].error and off["fr:long"].top is None
    assert off["zh:长"].error is None  # Chinese "长" against English "long": the rule holds
    s = ex.summarize(runner.trials["multilingual.language_off_x-2"])
    assert s["rule_failed"] == sum(t.error is not None for t in off.values()) >= 2  # fr:long and en:long
    assert s["n"] == len(off) and not math.isnan(s["rate"])
    by = s["by_language"]
    assert set(by) == {"en", "fr", "zh"} and sum(b["n"] for b in by.values()) == s["n"]
    assert by["fr"]["successes"] == sum(t.ok for item, t in off.items() if item.startswith("fr:"))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="cities must be"):
        ex.ExperimentsConfig(cities="some")
    with pytest.raises(ValueError, match="concepts must be"):
        ex.ExperimentsConfig(concepts=-1)
