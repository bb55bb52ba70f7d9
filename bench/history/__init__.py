"""The history of every run: a store (SQLite or PostgreSQL), ingestion of results / compare files into rows,
change points over each series (E-divisive), and a self-contained trend dashboard.

The per-change gate (``bench ab``) sees one change against its base; a creep of many small slowdowns, or a
slow leak, shows only across runs. ``bench history`` keeps them and looks for change points over them.
"""
