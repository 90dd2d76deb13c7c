"""Statistical process control, the pure core: charts, run rules, capability (issue 10).

Core only: not yet wired into the runtime, the alarms or the API.  See docs/spc.md.
"""
