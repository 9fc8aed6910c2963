"""Bounces: the per-message bounce address (VERP), reading bounce mailboxes, parsing reports.

What a bounce does to a message or a person is decided in `services.bounces`.
"""
