"""gptwaves: hidden-state waves and spelling-error statistics of a small GPT.

Pipeline: corpus -> model -> train -> record -> analysis (waves, spelling) -> report.
"""

__version__ = "0.1.0"
