"""Reporting: results.json, report.md and report.html (`publish_run`), curve reports, run comparisons, reviews and the row browser's answers. Imports scoring and the shared vocabulary."""
