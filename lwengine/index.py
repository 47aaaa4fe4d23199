"""Spec index and search (being written)."""
class SpecIndex:  # placeholder until the search work lands
    pass
