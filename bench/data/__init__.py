"""Data handling: the Catalog, file and image reading, pair tables, the readers' shared checks."""
