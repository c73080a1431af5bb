"""Run the migrator CLI and kill -9 it the moment a given S3 API call has returned.

``python tests/killpoint.py CompleteMultipartUpload backup --to s3://b/p`` runs ``migrator backup`` and
sends itself SIGKILL right after S3 answered CompleteMultipartUpload: a real kill at an exact point of
the upload, whatever the code around it does next (the tests assert what it left behind).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> int:
    operation, argv = sys.argv[1], sys.argv[2:]
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def call(self: Any, operation_name: str, api_params: Any) -> Any:
        result = original(self, operation_name, api_params)
        if operation_name == operation:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    BaseClient._make_api_call = call  # type: ignore[method-assign]
    from migrator.cli import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
