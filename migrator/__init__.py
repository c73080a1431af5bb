"""AskFrank migration engine: golang-migrate compatible, transactional, locked and audited.

This package must not import Prefect (the CLI has to start fast); ``tasks/`` and ``flows/`` wrap it.
"""

__version__ = "0.1.0"
