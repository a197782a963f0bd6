"""Measurements behind the tables of docs/RESULTS.md, each with ``build_parser()`` and
``main(argv=None)`` (``tools/<name>.py`` are their command lines):

* :mod:`.complexity`: parameters, FLOPs and CPU/GPU time of models side by side (Table 9 at
  CPU scale; ``tools/benchmark_complexity.py``);
* :mod:`.bn_statistics_gap`: how far the heads' test-time BN statistics are from the main
  task's own, and what re-estimating them changes (``tools/check_bn_statistics.py``).
"""
