"""The analysis: statistics over the runs, the summaries in ``data/summary/``, and the book's tables,
figures and generated sentences.

It reads what :mod:`crisp.study` wrote and needs the ``study`` extra: ``pip install 'crisp[study]'``.
"""

from .._extras import require

require("crisp.analysis", ("numpy", "pandas", "scipy"))
