from eval.results import judge_agreement


def test_judge_agreement_is_cohens_kappa_on_the_same_answers():
    string = {"r1": 1.0, "r2": 1.0, "r3": 0.0, "r4": 0.0, "r5": 1.0, "r6": 0.0}
    judge = {"r1": 0.9, "r2": 0.8, "r3": 0.1, "r4": 0.2, "r5": 0.3, "r6": 0.7}  # disagrees on r5 and r6
    values = {("rag", "answer_contained"): string, ("rag", "judge_answer_correctness"): judge}
    a = judge_agreement(values)["knowledge"]
    assert a["pairs"] == 6 and a["agreement"] == round(4 / 6, 4)
    # kappa = (po - pe) / (1 - pe) with po = 4/6 and pe = 0.5: 1/3
    assert abs(a["cohens_kappa"] - 1 / 3) < 1e-3
    assert judge_agreement({("rag", "answer_contained"): string}) == {}  # no judge, no agreement figure
