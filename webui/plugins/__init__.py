"""Extension points (hooks.py), the plugin manager that calls them, and the built-in plugins written on them."""
