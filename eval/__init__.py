"""ragft evaluation: task suites, metrics, statistics, verdicts and reports."""
