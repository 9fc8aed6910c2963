"""Bounces: reading the bounce mailbox (scan) and the undeliverable marks it sets and an
operator clears (marks).
"""
