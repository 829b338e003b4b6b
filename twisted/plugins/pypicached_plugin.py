from twisted.application.service import ServiceMaker

pypicached = ServiceMaker(
    "pypicached",
    "pypicached.tap",
    "A caching proxy for a Python package index.",
    "pypicached",
)
