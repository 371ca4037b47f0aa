"""The test suite: a package, so its modules are imported one way (tests.X)."""
