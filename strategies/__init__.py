"""Aggregation strategies for MTMedFormer-FL and the record keys shared by client and server."""
