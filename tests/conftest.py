"""Test-wide setup shared by every suite."""

from synod import logging as synod_logging

# In-process code (the Raft core in simulations) logs elections and transfers;
# thousands of simulated runs need only warnings. Server processes that tests
# start configure their own logging.
synod_logging.configure(level="warning")
