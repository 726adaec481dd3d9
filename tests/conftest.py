from __future__ import annotations

import sys
from pathlib import Path

# test helpers (hubproc, promserver, otlp_receiver) are plain modules beside the tests
sys.path.insert(0, str(Path(__file__).parent))
