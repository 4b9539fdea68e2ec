"""Boots judged: the scenarios, their verdicts, and the matrix of cases."""
