"""Analysis of stored results: significance tests (:mod:`.stats`), learning curves and AUBC (:mod:`.aubc`),
notebook 05's questions (:mod:`.open_questions`), tables (:mod:`.tables`), figure names (:mod:`.figures`)
and drawing (:mod:`.plots`)."""
