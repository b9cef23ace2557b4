"""Builders of valid test data shared by every test folder."""

from __future__ import annotations

from stdnum import luhn

PASSWORD = "correct horse battery"


def make_siren(index: int) -> str:
    """A valid SIREN (Luhn) distinct for each ``index``."""
    base = f"9{index:07d}"
    return base + luhn.calc_check_digit(base)


def make_nic(siren: str, establishment: int = 1) -> str:
    base = f"{establishment:04d}"
    return base + luhn.calc_check_digit(siren + base)
