"""ragft service: corpora in, indexes, models and arms, answers out."""
