"""`ragft tune`: hyperparameters chosen on validation rows carved from train rows; no test row is ever read."""

import json

import pytest
from ragft.eval.running.tuning import Tried, Tuning, candidates, split_for_validation, summary, tuning_corpus
from ragft.eval.tasks import TaskRow, load_tasks
from ragft.service.settings import Settings, with_overrides


def _label_row(i: int, split: str = "train", text: str | None = None) -> dict:
    return {"id": f"v{i}", "family": "behaviour", "split": split, "kind": "label",
            "input": text or f"ticket number {i} about the k{i} router", "instruction": "Answer yes or no.",
            "labels": ["yes", "no"], "label": "yes" if i % 2 else "no"}  # fmt: skip


@pytest.fixture
def tuning_source(full_corpus):
    """The small corpus with 15 more behaviour train rows, enough for five validation rows at a third."""
    with (full_corpus / "tasks" / "tasks.jsonl").open("a") as f:
        f.writelines(json.dumps(_label_row(i)) + "\n" for i in range(15))
    return full_corpus


def test_a_grid_is_every_combination_in_the_order_given():
    assert candidates(["a.x=1,2", "b.y=3"]) == [{"a.x": "1", "b.y": "3"}, {"a.x": "2", "b.y": "3"}]
    with pytest.raises(ValueError, match="is not setting=value1,value2"):
        candidates(["lora.learning_rate"])
    with pytest.raises(ValueError, match="at least one --grid"):
        candidates([])


def test_overrides_reach_one_entry_of_a_mapping_setting_and_name_unknown_keys():
    base = Settings()
    tuned = with_overrides(base, ["lora.learning_rate_by_group.lora/behaviour=1e-3", "lora.epochs=3"])
    assert tuned.lora.learning_rate_by_group == {"lora/behaviour": 1e-3} and tuned.lora.epochs == 3
    with pytest.raises(ValueError, match="unknown setting 'lora.learning_rat'"):
        with_overrides(base, ["lora.learning_rat=1"])
    with pytest.raises(ValueError, match="unknown setting 'lorra'"):
        with_overrides(base, ["lorra.epochs=1"])
    with pytest.raises(ValueError, match="not valid JSON"):
        with_overrides(base, ["lora.max_rows_per_family={behaviour: 3}"])


def test_validation_rows_come_from_train_rows_only_and_the_draw_is_seeded(tuning_source):
    rows = load_tasks(tuning_source)
    fit, validation = split_for_validation(rows, "behaviour", 1 / 3, seed=0)
    train_ids = {r.id for r in rows if r.family == "behaviour" and r.split == "train"}
    assert {r.id for r in fit} | {r.id for r in validation} == train_ids  # every train row, no test row
    assert not {r.id for r in fit} & {r.id for r in validation}
    assert all(r.split == "test" and not r.rephrasings for r in validation) and len(validation) == 5
    assert split_for_validation(rows, "behaviour", 1 / 3, seed=0)[1] == validation
    assert split_for_validation(rows, "behaviour", 1 / 3, seed=1)[1] != validation


def test_a_validation_row_whose_text_a_fit_row_has_is_trained_on_not_held_out():
    rows = [TaskRow.model_validate(_label_row(i, text="the same words" if i < 2 else None)) for i in range(6)]
    fit, validation = split_for_validation(rows, "behaviour", 0.5, seed=0)
    fit_texts = {r.text for r in fit}
    assert all(r.text not in fit_texts for r in validation)


def test_the_tuning_corpus_holds_no_test_row_and_too_few_rows_say_what_to_do(tuning_source, tmp_path):
    rows = load_tasks(tuning_source)
    folder = tuning_corpus(tuning_source, rows, "behaviour", 1 / 3, 0, tmp_path / "tuning")
    written = load_tasks(folder)
    test_texts = {r.text for r in rows if r.split == "test"}
    assert {r.family for r in written} == {"behaviour"} and not {r.text for r in written} & test_texts
    assert (folder / "documents").resolve() == (tuning_source / "documents").resolve()
    with pytest.raises(ValueError, match="at least 5 validation rows"):
        tuning_corpus(tuning_source, rows, "behaviour", 0.05, 0, tmp_path / "tuning")


def test_overlapping_intervals_are_reported_as_a_tie_break():
    tuning = Tuning("c", "behaviour", "lora", "behaviour_pass", 0, 10, 5)
    tuning.tried += [Tried({"a": "1"}, "r1", 0.4, 0.1, 0.7, 5), Tried({"a": "2"}, "r2", 0.4, 0.1, 0.7, 5)]
    assert tuning.best.overrides == {"a": "1"} and not tuning.separated  # equals: the grid's first
    assert any("cannot tell these candidates apart" in line for line in summary(tuning))
    tuning.tried.append(Tried({"a": "3"}, "r3", 0.9, 0.8, 1.0, 5))
    assert tuning.best.overrides == {"a": "3"} and tuning.separated
    lower = Tuning("c", "behaviour", "lora", "m", 0, 10, 5, higher_is_better=False, tried=tuning.tried)
    assert lower.best.overrides == {"a": "1"}


def test_tune_trains_each_candidate_on_fit_rows_and_scores_the_validation_rows(ragft, tuning_source):
    settings, run = ragft
    result = run("tune", "--corpus", tuning_source, "--family", "behaviour", "--arm", "lora",
                 "--grid", "lora.learning_rate_by_group.lora/behaviour=1e-3,1e-2", "--set", "lora.epochs=1")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = next((settings.data_dir / "tuning").glob("*/tuning.json"))
    found = json.loads(out.read_text())
    assert [t["overrides"] for t in found["tried"]] == [{"lora.learning_rate_by_group.lora/behaviour": v}
                                                        for v in ("1e-3", "1e-2")]  # fmt: skip
    assert len({t["run_id"] for t in found["tried"]}) == 2  # two trainings, two runs
    assert all(t["n"] == found["validation_rows"] == 5 for t in found["tried"])
    assert found["fit_rows"] == 11 and found["best"] is not None
    assert "choose: --set lora.learning_rate_by_group.lora/behaviour=" in result.output
    bad = run("tune", "--corpus", tuning_source, "--family", "nope", "--grid", "lora.epochs=1")
    assert bad.exit_code == 2 and "unknown family 'nope'" in bad.output
