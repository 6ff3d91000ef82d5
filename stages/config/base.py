"""The base of every params.yaml section (defined in :mod:`pipeline.settings`, shared with the method
families that contribute their own sections): unknown keys forbidden, values validated on assignment, no
boolean for a number."""
from pipeline.settings import Section

__all__ = ["Section"]
