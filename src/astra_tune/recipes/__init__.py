"""Example recipes shipped with the package (`astra quickstart` uses cpu-quickstart.yaml)."""
