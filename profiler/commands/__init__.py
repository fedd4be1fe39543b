"""What each subcommand does with its parsed arguments: one module per command, each
with ``run(args) -> int``. ``profiler.cli`` loads only the chosen command's module, so
``report`` never loads BPF and nothing but ``trace`` loads the reference servers.
"""
