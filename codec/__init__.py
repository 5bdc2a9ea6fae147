"""Entropy coding and the .vz container: numpy + constriction only (never torch)."""
