"""The study: training runs, grids, launchers, the GPU campaign, the benchmarks and the ``crisp`` CLI.

It builds on the library (``crisp``) and needs the ``study`` extra (numpy, pandas, scipy, accelerate,
tqdm): ``pip install 'crisp[study]'``. The analysis of its results is :mod:`crisp.analysis`.
"""

from .._extras import require

require("crisp.study", ("numpy", "pandas", "scipy", "accelerate", "tqdm"))
