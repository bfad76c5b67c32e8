"""Dataset plugins (filled in by their issue)."""
SPECS: list = []
