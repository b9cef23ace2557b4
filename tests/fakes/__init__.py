"""Fakes of remote third parties (only those: our own servers run for real in tests)."""
