"""Build AWS Lambda layers from Pipfile projects: hash-verified, target-correct, reproducible."""

__version__ = "0.1.0"
