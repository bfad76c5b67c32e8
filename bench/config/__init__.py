"""Suite files: the YAML schema, matrix expansion and every check made before anything runs."""
