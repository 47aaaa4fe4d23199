"""Drop-in adapters for other learnware tooling (each guarded: importing them never needs the tool)."""
