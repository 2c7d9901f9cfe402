"""Corpus tools: task-suite audit, importing a team's documents into a corpus, generated rows and their review. Imports scoring and reporting and the vocabulary."""
