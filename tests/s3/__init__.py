"""S3 tests against a real SeaweedFS (a package so that its conftest does not shadow tests/conftest.py)."""
