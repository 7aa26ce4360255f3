"""Workflow: the notebook table and parameter checks (:mod:`.notebooks`), papermill and nbval
(:mod:`.papermill`), and the command line (:mod:`.cli`)."""
