"""gptwaves: hidden-state waves and spelling-error statistics of a small GPT.

Pipeline: corpus -> model -> train -> record -> analysis (waves, spelling) -> report.
"""

import os as _os

__version__ = "0.1.0"

# OpenMP threads that wait at a barrier sleep instead of spinning (docs/method.md, Model,
# "Threads"): on cores shared with other work, spinning threads took the time of the thread they
# were waiting for (a `paper` training iteration about 4x slower). Read when torch loads its OpenMP library, so it acts when gptwaves is imported
# before torch (the command line, ``python -m gptwaves``) and in every process started from it;
# a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
