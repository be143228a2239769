"""Configuration, presets, trainer assembly, callbacks and reports."""
