"""The ``mnist-pipeline`` command line: its parser, console output, the embedded Prefect
backend, stop signals, and the ``serve``/``stack`` launchers."""
