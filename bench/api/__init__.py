"""The plugin API: the interfaces plugins code against, the hooks, the registry and its loading."""
