"""The metric registry: each metric carries its family, direction and the rows it reads.

Adding a metric is one `register(Metric(...))` call in its family's module; the runner, the
statistics, the verdict and the report all loop over `METRICS`. Judge-free by default:
string, JSON, label, retrieval and embedding metrics run locally.

Example:
    >>> from ragft.eval.scoring.metrics import METRICS, headline
    >>> headline("knowledge").name
    'answer_contained'
    >>> METRICS["hallucination_rate"].higher_is_better
    False
"""

# Each module registers its family's metrics on import.
from ragft.eval.scoring.metrics import abstention, behaviour, freshness, general, judge, knowledge  # noqa: E402,F401
from ragft.eval.scoring.metrics.registry import (
    METRICS,
    Metric,
    ScoringContext,
    balanced,
    family_metrics,
    headline,
    ragas_metric,
    ragas_value,
    register,
    report_families,
)

__all__ = ["METRICS", "Metric", "ScoringContext", "balanced", "family_metrics", "headline", "ragas_metric", "ragas_value",
           "register", "report_families"]  # fmt: skip
