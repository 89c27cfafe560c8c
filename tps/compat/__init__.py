"""Patches of libraries' private APIs: one module per library, each with a test that fails loudly when the library changes."""
