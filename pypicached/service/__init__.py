"""
The running daemon: ``wiring`` puts the parts together (``Proxy``), ``tree`` starts
and stops them as Twisted services, ``daemon`` adds the listeners for twistd.
"""

from pypicached.service.daemon import endpoint_for, make_service
from pypicached.service.tree import SAVE_EVERY, CacheService, Part, StatsSaver
from pypicached.service.wiring import Proxy

__all__ = ["SAVE_EVERY", "CacheService", "Part", "Proxy", "StatsSaver", "endpoint_for", "make_service"]
