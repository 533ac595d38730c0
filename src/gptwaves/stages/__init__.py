"""The pipeline stages over a run directory, one module per stage, each owning its folder.

==========  =============================  ==========================================
stage       module                         writes (under the run directory)
==========  =============================  ==========================================
train       :mod:`gptwaves.train`          run.json, checkpoints/, state/, metrics.jsonl
record      :mod:`.recordings`             recordings/
waves       :mod:`.waves`                  waves/
spelling    :mod:`.spelling`               spelling/
intervene   :mod:`.interventions`          interventions/
summary     :mod:`.summary`                summary.json
report      :mod:`.report`                 report/ (and figures/training_curves.png)
==========  =============================  ==========================================

:mod:`.common` holds what they share (checkpoint selection, the focus-tap rule, reuse of results
whose settings match, the corpus and lexicon of a run). Each stage takes settings objects
(`RecordSettings`, `WavesSettings`, `SpellingSettings`, `ModelSource`) built once by the CLI or
the caller; the numbers come from the pure functions of :mod:`gptwaves.analysis`, the drawing
from :mod:`gptwaves.figures`. ``gptwaves reproduce`` (:mod:`gptwaves.reproduce`) runs them in order.
"""
