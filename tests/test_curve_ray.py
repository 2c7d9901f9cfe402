"""The Ray executor for curve points (eval.executor=ray) on a local Ray head with 2 CPUs.

Ray is an optional extra, not in the default install (`make install`, CI): without it the tests that start a head
skip, saying so; the one that checks the message a missing Ray gives runs everywhere.
Run them with `make ray` (installs requirements-ray.lock into .venv, then this file; about a minute here)."""

import json
import time

import pytest
from ragft.eval.curve_spec import CurveSpec
from ragft.eval.running import curve

from tests.test_curve import curve_corpus  # noqa: F401

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(
    ray is None,
    reason="Ray is an optional extra, not in the default install: `make ray` installs it and runs this file",
)


def comparable(value, folders):
    """The results with the two runs' data folders named alike, and without when and how long (each run's own)."""
    text = json.dumps(value, sort_keys=True, default=str)
    for folder in folders:
        text = text.replace(str(folder), "<data>")
    return _without(json.loads(text), {"created_at", "wall_s"})


def _without(value, keys):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    return [_without(v, keys) for v in value] if isinstance(value, list) else value


def with_data(settings, folder, **eval_settings):
    return settings.model_copy(update={
        "data_dir": folder, "artifact_dir": folder / "artifacts",
        "eval": settings.eval.model_copy(update={"reports_dir": folder / "reports", **eval_settings}),
    })  # fmt: skip


@needs_ray
def test_a_curve_on_ray_writes_the_local_results(settings, curve_corpus, tmp_path):  # noqa: F811
    # two data folders of one name (a run records its data folder's name) under different parents
    local, remote = with_data(settings, tmp_path / "local" / "data"), with_data(settings, tmp_path / "ray" / "data")
    spec = CurveSpec.resolve(local, curve_corpus, arms=["base", "lora"], families=["behaviour"], rows=[3, 6, "all"])
    results, folder = curve.run_curve(local, spec)
    heard = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local head with 2 CPUs, as this machine
    try:
        on_ray, ray_folder = curve.run_curve(remote, spec, progress=lambda stage, done, total: heard.append(stage),
                                             executor="ray")  # fmt: skip
        assert ray.is_initialized()  # a head it did not start is left running
    finally:
        ray.shutdown()
    assert len(heard) == 4 and all(h.startswith("curve: ") and h.endswith(" done") for h in heard)  # reference + 3
    same = [tmp_path / "local", tmp_path / "ray"]
    assert comparable(on_ray, same) == comparable(results, same)
    assert [p["run_id"] for p in on_ray["points"]] == [p["run_id"] for p in results["points"]]
    on_disk = json.loads((ray_folder / "results.json").read_text())
    assert comparable(on_disk, same) == comparable(json.loads((folder / "results.json").read_text()), same)


def timed(cwd, settings, spec):
    """A stand-in point (what a task runs) that records when it ran: the test is of the scheduling."""
    started = time.time()
    time.sleep(1.5)
    return (spec, started, time.time())


def overlapping(spans) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))


@needs_ray
def test_points_run_one_at_a_time_unless_told_to_share_a_node(settings, tmp_path):
    whole = with_data(settings, tmp_path, ray_num_cpus=2)
    ran = curve.ray_runs(whole, ["a", "b", "c"], ["a", "b", "c"], lambda *a: None, point=timed)
    assert not ray.is_initialized()  # the local head it started is stopped
    assert [r[0] for r in ran] == ["a", "b", "c"]  # in the order asked
    assert not overlapping([r[1:] for r in ran])  # default: a whole node's CPUs per point
    shared = with_data(settings, tmp_path, ray_num_cpus=2, ray_point_cpus=1)
    ran = curve.ray_runs(shared, ["a", "b"], ["a", "b"], lambda *a: None, point=timed)
    assert overlapping([r[1:] for r in ran])  # one CPU each: two points side by side
    too_many = with_data(settings, tmp_path, ray_num_cpus=2, ray_point_cpus=3)
    with pytest.raises(ValueError, match="largest Ray node has 2 CPUs"):
        curve.ray_runs(too_many, ["a"], ["a"], lambda *a: None, point=timed)


def test_without_ray_the_executor_says_how_to_get_it(settings, curve_corpus, tmp_path, monkeypatch):  # noqa: F811
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RuntimeError, match="make ray"):
        curve.ray_runs(settings, ["a"], ["a"], lambda *a: None)
    # a curve asked to run on Ray says so before it writes or trains anything
    monkeypatch.setattr(curve.importlib.util, "find_spec", lambda name: None)
    spec = CurveSpec.resolve(settings, curve_corpus, arms=["base", "lora"], families=["behaviour"], rows=[3])
    with pytest.raises(RuntimeError, match="requirements-ray.lock"):
        curve.run_curve(settings, spec, executor="ray")
    assert not (settings.data_dir / "curves").exists()
