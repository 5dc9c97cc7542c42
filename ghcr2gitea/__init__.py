"""The application package: the ``ghcr2gitea`` command line, the composition root.

It is the one place that sees all three packages: it parses the arguments, builds the engine's objects
(``wizard.boot``), and hands them to the UI (``screens``) or serves the simulated world (``sandbox``).
``wizard/`` (the engine) imports neither ``screens`` nor ``sandbox`` (tests/test_layout.py)."""
