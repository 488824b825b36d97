"""Adapters for code written against other programs' APIs; ``compat.modules`` is A1111's extension API."""
