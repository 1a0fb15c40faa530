"""Saving, loading and sharing: the bundled default model, model cards, Hub pushes and checks of loaded weights."""
