"""``python -m dscloud.cli``: the ``dsc`` command (how the CDK bundles the Lambda code)."""

from __future__ import annotations

import sys

from dscloud.cli import main

sys.exit(main())
