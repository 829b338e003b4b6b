"""
The supply-chain policy for the whole LAN: which projects and files clients may
see (release cooldown, deny and allow lists, malware advisories), applied when
answering, from what is cached, never when filling the cache.
"""

from pypicached.policy import explain
from pypicached.policy.advisories import AdvisoryFeed
from pypicached.policy.answers import UNAVAILABLE, Answers, FileAnswer, PageAnswer, max_age
from pypicached.policy.gate import Gate
from pypicached.policy.judge import Denied
from pypicached.policy.rules import DenyEntry, Policy, allow_list, deny_list

__all__ = [
    "UNAVAILABLE",
    "AdvisoryFeed",
    "Answers",
    "Denied",
    "FileAnswer",
    "PageAnswer",
    "DenyEntry",
    "Gate",
    "Policy",
    "allow_list",
    "deny_list",
    "max_age",
    # the module (explain() and as_text() are its): its explain() function would hide it if exported here
    "explain",
]
