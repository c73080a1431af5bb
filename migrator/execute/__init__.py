"""Where migration SQL runs and the audit row is written.

``executor`` is the one place a migration file's statements reach a server (transaction or dirty
protocol, timeouts, cancel, INVALID indexes) and it writes the audit row around them; ``state`` is
the record it writes: ``schema_migrations`` (golang-migrate's layout), the audit history table and
the advisory lock ids (the engine, recovery, rehearsal and backups read it); ``batch`` sends many
statements in one round trip; ``cancel`` turns SIGTERM/SIGINT into a server-side cancel.
This face imports nothing.
"""
