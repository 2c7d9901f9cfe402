import os

from ragft.eval.reporting.report import write_report
from ragft.service import folders


def test_replace_file_fsyncs_under_a_temp_name_unique_to_each_writer(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(str(a)), real_replace(a, b)))
    folders.replace_file(tmp_path / "results.json", b"one")
    folders.replace_file(tmp_path / "results.json", b"two")
    assert (tmp_path / "results.json").read_bytes() == b"two"
    assert len(set(renamed)) == 2  # a concurrent `ragft score` never writes into this writer's temp file
    assert len(synced) == 4  # the file and the folder, each time
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_reports_are_written_through_replace_file(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(folders, "replace_file", lambda path, data: written.append(path.name))
    results = {"run_id": "r1"}
    monkeypatch.setattr("ragft.eval.reporting.report.render_markdown", lambda r: "md")
    monkeypatch.setattr("ragft.eval.reporting.report.render_html", lambda r: "html")
    write_report(results, tmp_path)
    assert sorted(written) == ["report.html", "report.md", "results.json"]


def _complete(folder):
    return (folder / "manifest.json").is_file()


def test_recovery_never_removes_a_live_build_and_finishes_a_dead_one(tmp_path):
    """`ragft train` beside the server: the server's recovery must leave the trainer's temp folder alone while
    the build holds it, and promote it once the build is dead (kill -9 between the two renames)."""
    import fcntl

    folder = tmp_path / "lora"
    live = folders.new_build(folder)
    (live / "manifest.json").write_text("{}")
    assert folders.recover(folder, _complete) is None
    assert live.is_dir() and not folder.exists()
    folders._release_builds(gone_only=False, tmp=live)  # the builder died: its flock went with it
    assert "restored" in folders.recover(folder, _complete)
    assert _complete(folder) and not live.exists()
    fd = os.open(folder.with_name("lora.swap.lock"), os.O_RDONLY)  # swaps and recoveries take turns on it
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_a_swap_releases_its_build(tmp_path):
    folder = tmp_path / "lora"
    tmp = folders.new_build(folder)
    (tmp / "manifest.json").write_text("{}")
    folders.swap_in(tmp, folder)
    assert _complete(folder) and not folders.is_live_build(folder) and str(tmp) not in folders._BUILDS
