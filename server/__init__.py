"""Flower ServerApp of MTMedFormer-FL: coordinates federated rounds (thin adapter over the library)."""
