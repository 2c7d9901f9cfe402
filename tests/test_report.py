"""eval/reporting/report.py: the charts draw on figures of their own, never pyplot's shared state."""

import json
from concurrent.futures import ThreadPoolExecutor


def test_charts_draw_without_pyplot_and_from_several_threads_at_once(stored_runs, monkeypatch):
    """The results routes draw charts in request threads while a job publishes a report in its own: pyplot's global
    figure registry is not thread-safe, so the charts are `Figure` objects now."""
    import matplotlib.pyplot as plt
    from ragft.eval.reporting.report import charts

    results = json.loads((stored_runs.settings.eval.reports_dir / stored_runs.a / "results.json").read_text())
    alone = charts(results)
    assert alone and all(uri.startswith("data:image/png;base64,") for uri in alone.values())

    def no_pyplot(*args, **kwargs):
        raise AssertionError("pyplot used")

    for name in ("subplots", "figure", "close"):
        monkeypatch.setattr(plt, name, no_pyplot)
    with ThreadPoolExecutor(max_workers=4) as pool:
        drawn = list(pool.map(lambda _: charts(results), range(8)))
    assert all(d == alone for d in drawn)  # each thread drew exactly what one alone draws
