"""Tools for development, demos and end-to-end tests (the scripted fake model server)."""
