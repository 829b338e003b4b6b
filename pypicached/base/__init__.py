"""The bottom layer: project names, request paths and disk helpers, used by every layer above."""
