"""The one training/evaluation engine, shared by centralized training and the federated client."""
