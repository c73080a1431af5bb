"""A database a migration left dirty: what happened, the ways out, and the page the on-call reads.

``actions``: ``inspect`` reads the incident from the audit trail (each statement done, failed or
not run) and ``recover`` runs one checked, audited way out (revert, resume, mark applied, leave
dirty) through the executor; ``incident``: the incident as Markdown and the claim that pages once
per incident. The CLI's ``migrator recover`` and the Prefect recovery form share both. This face
imports nothing.
"""
