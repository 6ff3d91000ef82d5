"""DVC stages: each module reads its section of params.yaml, calls ``pipeline`` and writes its outputs."""
