"""Attacks on the real daemon: each numbered defect of the hostile-clients issue as a test."""
