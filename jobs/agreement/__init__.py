"""Which judge to trust: agreement between judges, and between a judge and reference scores.

No Ray, no HTTP: `sources` reads score dirs and data files into one table joined on `row_id`,
`stats` holds the statistics and the (cluster) bootstrap, `compare` runs every comparison,
`pairwise` measures A/B verdicts (relative, pairwise_absolute) against a label column, and
`report` writes agreement.json / agreement.md and prints the tables. `judgefleet agree`
(jobs.commands.agree) is the command over them.
"""

from jobs.agreement.compare import compare
from jobs.agreement.report import show, write
from jobs.agreement.sources import Joined, Source, load

__all__ = ["compare", "load", "show", "write", "Joined", "Source"]
