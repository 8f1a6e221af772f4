"""The floor every stage stands on: settings, the registry, the model artifact, inference and
the store. It imports no other package of this project (``tests/test_layers.py``)."""
