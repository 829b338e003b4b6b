"""
The supply-chain policy for the whole LAN: which projects and files clients may
see (release cooldown, deny and allow lists, malware advisories), applied when
answering, from what is cached, never when filling the cache.
"""
