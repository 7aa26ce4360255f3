"""Selection: the algorithms, one module each, and the registries that name them.

* algorithms: :mod:`.kcenter` (core-set, Eq. 1), :mod:`.medal` (MedAL, Eq. 2), :mod:`.ranking`
  (random, entropy, top-k of a score), :mod:`.alpha` (Eq. 6: appended features, balanced α);
  :mod:`.distances` (chunked, centred distances they share), :mod:`.pool` (mask checks, initial labels);
* registries: :mod:`.heuristics` (heuristics H by name), :mod:`.features` (task-agnostic feature families);
* :mod:`.methods` — a method (heuristic + family + α) and its label, the one home of method labels.
"""
