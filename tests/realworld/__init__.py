"""Real projects as people write them: one module per trait met in public Pipfile projects.

Each test builds a fixture written here (never a downloaded project) that reproduces one trait,
and asserts the outcome a user would call right: a refusal names what to do; a success imports
under the target interpreter.
"""
