"""What people read: status, plan, the officers' reports and escalation digests, the console's
progress and lookups, previews, the audit log in words.
"""
