"""What a person reads: the live screen, the tables of a run, report, compare, the
transport comparison and doctor's findings, all drawn with rich.

Views read data (a :class:`~profiler.run.Run`, stage names from
:mod:`profiler.hooks`, a :class:`~profiler.diagnosis.Diagnosis`) and know nothing of
how it was collected: no module here imports the loader, libbpf, the collector,
sessions or the reference servers.
"""
