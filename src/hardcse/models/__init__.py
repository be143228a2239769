"""Building, loading and exporting encoders."""
