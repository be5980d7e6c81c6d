"""Helpers the test modules of this directory share; no test module imports another."""
