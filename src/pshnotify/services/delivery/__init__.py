"""Sending: claiming due messages, building them, the relay connection's gates, recording each
attempt durably (the ledger), the one-sender lock.
"""
