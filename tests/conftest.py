"""Shared test setup: Hypothesis profiles and tiny factories.

Profiles (``HYPOTHESIS_PROFILE``): ``dev`` (default, fast, for everyday runs) and ``ci``
(thorough: at least 1,000 examples per policy in the parity tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from support import IMPLS

settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The real public traces live beside the project, never in it (see ../shared/traces/README.md).
SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


@pytest.fixture(params=sorted(IMPLS))
def Sched(request):
    """The scheduler class under test: the Rust core and the reference, in turn."""
    return IMPLS[request.param]
