"""Reference values of the NB log-likelihood from scvi-tools (run in .venv-bench).

.venv-bench/bin/python tests/_scripts/scvi_nb_log_prob.py > tests/data/scvi_nb_log_prob.csv
"""

import itertools
import sys

import scvi
import torch
from scvi.distributions import NegativeBinomial

rows = list(
    itertools.product(
        [0.0, 1.0, 3.0, 17.0, 250.0], [0.05, 1.0, 8.0, 300.0], [0.1, 1.0, 12.0, 1000.0]
    )
)
x, mu, theta = (torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True))
log_prob = NegativeBinomial(mu=mu, theta=theta).log_prob(x)
out = sys.stdout
out.write(f"# scvi-tools {scvi.__version__}, torch {torch.__version__}\n")
out.write("x,mu,theta,log_prob\n")
for xi, mi, ti, lp in zip(x.tolist(), mu.tolist(), theta.tolist(), log_prob.tolist(), strict=True):
    out.write(f"{xi},{mi},{ti},{lp:.10g}\n")
