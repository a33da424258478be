"""The project's own tests; a package so that ``tests.doubles`` imports the same way everywhere."""
