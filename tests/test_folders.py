import os

from eval.report import write_report
from service import folders


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
    monkeypatch.setattr("eval.report.render_markdown", lambda r: "md")
    monkeypatch.setattr("eval.report.render_html", lambda r: "html")
    write_report(results, tmp_path)
    assert sorted(written) == ["report.html", "report.md", "results.json"]
