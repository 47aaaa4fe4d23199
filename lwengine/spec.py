"""RKME table specifications (being written)."""
class RKMESpec:  # placeholder until the spec work lands
    pass
def fit_many(*a, **k):
    raise NotImplementedError
