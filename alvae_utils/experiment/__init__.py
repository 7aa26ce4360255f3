"""Experiments: profiles (:mod:`.profiles`) and their overrides (:mod:`.overrides`), the results store
(:mod:`.results`), Algorithm 1 (:mod:`.loop`), sweep planning (:mod:`.planning`), and the t-SNE
experiment of Figs. 5–6 (:mod:`.tsne`, :mod:`.tsne_experiment`)."""
