"""The roles the request reader gives words (``services/core/reading.py`` tells what each means), in one place so
that the reading rules' modules and the tagger's training share them."""

WANT, ALT, NOT = "WANT", "ALT", "NOT"
IN, NOTIN, LT, LE, GT, GE, REF = "IN", "NOTIN", "LT", "LE", "GT", "GE", "REF"
ROLES = (WANT, ALT, NOT, IN, NOTIN, LT, LE, GT, GE, REF)
WORD_LABELS = ("O", *(f"{prefix}-{role}" for role in ROLES for prefix in ("B", "I")))
"""The tagger's word labels, in the order of its output classes."""
VALUE_ROLES = (WANT, ALT, NOT)
QUANTITY_ROLES = (IN, NOTIN, LT, LE, GT, GE)
