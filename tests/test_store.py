import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

from ragft.eval.store import Prediction, Store, StoredPassage


def prediction(row_id, text="x"):
    return Prediction("base", row_id, "main", text, (StoredPassage("d#0", "d", "t"),), 3, 2, 10.0, 0.0, 1)


def test_a_stored_row_is_never_duplicated_or_overwritten(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    store.create_run("r1", "c", {"a": 1})
    store.add_predictions("r1", [prediction("k1", "first")])
    store.add_predictions("r1", [prediction("k1", "second"), prediction("k2")])
    assert store.count("r1") == 2 and store.predictions("r1")[0].text == "first"
    assert store.missing("r1", "base", "main", ["k1", "k2", "k3"]) == ["k3"]
    assert store.create_run("r1", "c", {"a": 2}).config == {"a": 1}  # resume keeps the original record
    assert store.predictions("r1")[0].passages[0].doc_id == "d"


def test_a_killed_run_resumes_without_lost_or_duplicate_rows(settings, full_corpus, tmp_path):
    env = os.environ | {
        "RAGFT_DATA_DIR": str(settings.data_dir),
        "RAGFT_ARTIFACT_DIR": str(settings.artifact_dir),
        "RAGFT_MODELS__GENERATOR": settings.models.generator,
        "RAGFT_MODELS__EMBEDDER": settings.models.embedder,
        "RAGFT_RETRIEVAL__CHUNK_TOKENS": "24",
        "RAGFT_RETRIEVAL__CHUNK_OVERLAP": "4",
        "RAGFT_GENERATION__MAX_NEW_TOKENS": "150",  # slow answers, so the kill lands mid-run
        "RAGFT_GENERATION__BATCH_SIZE": "1",
        "RAGFT_EVAL__ROWS_PER_BATCH": "1",
        "RAGFT_EVAL__REPORTS_DIR": str(tmp_path / "reports"),
    }
    cmd = [sys.executable, "-m", "ragft.service.app.cli", "eval", "--corpus", str(full_corpus), "--arms", "base,fewshot,rag",
           "--run-id", "killed"]  # fmt: skip
    db = settings.data_dir / "ragft.sqlite3"

    def stored() -> list[tuple]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            try:
                return conn.execute(
                    "SELECT arm, row_id, phase, prediction FROM predictions ORDER BY 1, 2, 3"
                ).fetchall()
            except sqlite3.OperationalError:  # the run is still creating its tables
                return []

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(stored()) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = stored()
    total = 3 * 11 - 2 * 2  # three arms x eleven test rows, less the general probes rag and fewshot are not asked
    assert 3 <= len(before) < total, "the run should have been killed halfway"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = stored()
    assert len(after) == len({r[:3] for r in after}) == total  # every row once
    assert set(before) <= set(after)  # what was stored before the kill is kept as it was
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM runs WHERE id='killed'").fetchone()[0] == "done"


def test_a_failed_batch_insert_rolls_back_and_the_store_keeps_working(tmp_path):
    import dataclasses

    import pytest

    store = Store(tmp_path / "db.sqlite3")
    store.create_run("r1", "c", {})
    store.add_predictions("r1", [prediction("k1")])
    unbindable = dataclasses.replace(prediction("k3"), prompt_tokens=[1])  # SQLite cannot store a list
    with pytest.raises(sqlite3.Error):
        store.add_predictions("r1", [prediction("k2"), unbindable])
    assert store.count("r1") == 1  # nothing of the failed batch, all of the one before
    store.add_predictions("r1", [prediction("k2")])  # no transaction was left open
    store.set_status("r1", "failed", error="InterfaceError: ...")
    assert store.count("r1") == 2 and store.run("r1").status == "failed"


def test_the_database_is_private_to_its_user(tmp_path):
    Store(tmp_path / "data" / "db.sqlite3").create_run("r1", "c", {})
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "data").iterdir()} == {
        "db.sqlite3": 0o600, "db.sqlite3-wal": 0o600, "db.sqlite3-shm": 0o600
    }  # fmt: skip


def test_the_answer_cache_keeps_answers_by_key_and_older_databases_gain_the_reused_column(tmp_path):
    from ragft.eval.store import CachedAnswer

    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as conn:  # a database from before the answer cache
        conn.executescript(
            "CREATE TABLE predictions (run_id TEXT, arm TEXT, row_id TEXT, phase TEXT, prediction TEXT, passages TEXT,"
            " prompt_tokens INTEGER, generated_tokens INTEGER, latency_ms REAL, retrieval_ms REAL, batch_size INTEGER,"
            " machine_ms REAL, PRIMARY KEY (run_id, arm, row_id, phase));"
            "INSERT INTO predictions VALUES ('r0', 'base', 'k1', 'main', 'old', '[]', 3, 2, 10.0, 0.0, 1, 10.0);"
        )
    store = Store(path)
    assert store.predictions("r0")[0].reused is False and store.reused("r0") == 0
    store.create_run("r1", "c", {})
    store.add_predictions("r1", [prediction("k1"), dataclasses.replace(prediction("k2"), reused=True)])
    assert store.reused("r1") == 1 and [p.reused for p in store.predictions("r1")] == [False, True]
    answers = {f"key{i}": CachedAnswer(f"answer {i}", 10, 3, 120.0, 4, 30.0) for i in range(1200)}
    store.cache_answers([(k, "base:abc", a) for k, a in answers.items()])
    assert store.cached_answers([*answers, "unknown"]) == answers  # more keys than one statement binds
    store.cache_answers([("key0", "base:abc", CachedAnswer("newer", 10, 1, 50.0, 1, 50.0))])
    assert store.cached_answers(["key0"])["key0"].text == "newer"


def test_opening_the_database_to_read_takes_no_write_lock(tmp_path):
    """Every GET of the results routes opens a Store, and opening one took the write lock (a migration check in a
    write transaction): while another writer held it, a read waited the 10 s busy timeout, then failed."""
    path = tmp_path / "db.sqlite3"
    Store(path).close()  # created and migrated once
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a long write in another process
    try:
        started = time.perf_counter()
        store = Store(path)
        assert store.runs() == [] and time.perf_counter() - started < 2
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
