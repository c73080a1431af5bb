"""The database's schema as data: capture it from the catalog, build what the migrations produce, compare.

``catalog`` reads one database's objects (tables, columns, constraints, indexes, ...) into plain
dicts; ``expected`` builds the schema the applied migrations produce on a scratch database through
the engine and caches it by the files' hashes; ``drift`` compares the two and reports one line per
difference. Plain Python, no Prefect, so ``migrator drift``, ``verify`` and the status monitor share it.
"""
