"""The check function's own code: its lifecycle (one invocation per execution environment) and
its actions (check, compile, build_sdist). The engine it runs is layer_builder's runner."""
