"""Every in-process test computes with one torch thread, as runs do by default (`threads=1`): float
reductions then add up in the same order on any machine, whatever its core count."""

import torch

torch.set_num_threads(1)
