"""ragft service: corpora in, indexes, models and arms, answers out."""

import os

# OpenMP's default active waiting made 2-thread PyTorch 15-20x slower whenever anything else used the CPU (an eval
# job beside live queries); OpenMP reads this once, when torch loads, so it is set before any module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
