"""Benches check their result once, then time. Timing is off unless asked for
(`pytest benches --benchmark-enable`, or `make bench`), so `pytest benches` is a quick smoke test."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config):
    if not config.getoption("benchmark_enable", default=False):
        config.option.benchmark_disable = True
