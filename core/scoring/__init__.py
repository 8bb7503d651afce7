"""Batch scoring without Prefect, one job per module.

``jobs``       which outputs each input gets; refuses clashes before anything is written
``layout``     open a CSV (plain or gzip) and map its columns from line 1
``reader``     stream the file as chunks of rows (the parse unit), long lines capped
``fast_scan``  the vectorised tokenizer that parses a chunk's clean rows
``careful``    the per-row parser: every rejected row's exact reason
``writers``    predictions (CSV or Parquet) and rejects, each written atomically
``score_file`` one file: read, predict, write, summarize
``summary``    what a run tells its user: summary table, rejected rows, confusion matrices
"""
