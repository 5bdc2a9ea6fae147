"""Entropy coding and the .vz container: numpy + constriction (never torch); numba, where installed, compiles the
blend predictor's coder (kernels.py: the same bits without it)."""
