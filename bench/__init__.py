"""The benchmarks: load (``load``), servers and processes (``servers``, ``processes``), the
served bench (``served``: ceiling, service cases, models side by side, the drift job's timing),
process and thread layouts (``layouts``), the monitoring loop (``loop``), the drift verdict
(``drift``), the soak (``soak``), the seed-style baseline server (``baseline_server``) and the
Label Studio round trip (``label_studio``).

A floor of its own above ``monitoring`` and ``service``: only the CLI imports it
(``tests/test_layers.py``). Benchmarks measure; they assert nothing (tests do).
"""
