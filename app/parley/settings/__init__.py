"""Settings package: base.py holds everything, dev/test/production only adjust it."""
