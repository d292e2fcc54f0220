"""The top floor: one module per console command (``setup.cfg`` points each script here).

Each command parses its arguments, composes its config and calls the library; the Hydra boilerplate and the
one-line error report are written once, in :mod:`vrm.cli.app`.
"""
