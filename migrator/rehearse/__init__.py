"""``migrator rehearse``: apply the pending migrations to a restored copy of the database first.

``run``: choose and restore the backup into a scratch database, refuse the source itself;
``apply``: apply each migration there while watching ``pg_locks``; ``model``: what a rehearsal
measures; ``report``: the report (terminal, JSON, Markdown). This face imports nothing.
"""
