"""
What the operator sees and asks for: metrics, the health check, the ``/stats``
summary and the status page, and the control endpoints that answer them.
"""

from pypicached.ops import summary
from pypicached.ops.control import Answer, Control
from pypicached.ops.health import Health
from pypicached.ops.ledger import STATE_FILE, Ledger
from pypicached.ops.metrics import Metrics
from pypicached.ops.summary import as_text, human_bytes

__all__ = [
    "Answer",
    "Control",
    "Health",
    "Ledger",
    "Metrics",
    "STATE_FILE",
    "as_text",
    "human_bytes",
    # the module: its summary() function would hide it if it were exported here under the same name
    "summary",
]
