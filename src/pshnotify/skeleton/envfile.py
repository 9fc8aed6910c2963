"""The commented `.env` of a new campaign folder, made from the Settings model itself: every
setting, its default and what it does (a setting without a description here fails the tests)."""

from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from pshnotify.settings import ENV_PREFIX, Settings

DESCRIPTIONS: dict[str, str] = {
    "database_url": "Where the campaign's state lives: a SQLite file (made on `pshnotify init`) "
    "or postgresql+psycopg://user:password@host/db for several replicas.",
    "program_file": "The program file: courses, waves, eligibility, cadence, sending hours.",
    "templates_dir": "The email templates, one folder per kind. When the default folder is "
    "missing, the templates shipped with pshnotify are used.",
    "smtp_host": "The relay that sends the emails (the demo's mail catcher by default).",
    "smtp_port": "The relay's port: 587 for STARTTLS, 465 for TLS, 25 without.",
    "smtp_username": "The relay's login, if it asks for one.",
    "smtp_password": "The relay's password (keep this file mode 0600).",
    "smtp_tls": "none, starttls or tls.",
    "smtp_timeout": "Seconds to wait for the relay before the attempt counts as deferred.",
    "smtp_connections": "Connections kept open to the relays at once.",
    "smtp_relays": 'Further relays, a JSON list: [{"host": "b.example.edu", "share": 1, '
    '"fallback": false}]; the relay above is the first.',
    "smtp_share": "The first relay's share of the connections.",
    "smtp_messages_per_connection": "Messages sent on one connection before it is renewed "
    "(0: no limit).",
    "rate_per_second": "The relay's published limit: at most this many messages a second.",
    "rate_per_minute": "The relay's published limit: at most this many messages a minute.",
    "rate_per_day": "The relay's published limit: at most this many messages a day.",
    "rate_per_window": "A relay's own 'N per unit' (Postfix's smtpd_client_message_rate_limit).",
    "rate_window_seconds": "That unit, in seconds (Postfix's anvil_rate_time_unit).",
    "smtp_ca_file": "A CA bundle to trust for the relay's certificate (else the system's).",
    "envelope_from": "The envelope sender the relay bounces to (else the program's sender).",
    "message_id_domain": "The domain that names the Message-IDs, such as mail.example.edu.",
    "bounce_address": "bounces@domain: each message's envelope sender becomes "
    "bounces+TOKEN@domain, so a bounce names its message.",
    "bounce_secret": "The key that signs those tokens (required with BOUNCE_ADDRESS).",
    "bounce_maildir": "A Maildir where the mail server delivers the bounce address.",
    "bounce_imap_url": "Or an IMAP folder to read bounces from: imaps://user@host/INBOX.",
    "bounce_imap_password": "The IMAP password (required with BOUNCE_IMAP_URL).",
    "bounce_imap_ca_file": "A CA bundle to trust for the IMAP server's certificate.",
    "bounce_soft_days": "An address that soft-bounces on this many days is marked undeliverable.",
    "bounce_webhook_secret": "Signs bounce events posted to /webhooks/bounces (else "
    "WEBHOOK_SECRET does).",
    "report_list_limit": "The officer's report lists people in its body up to this many (its "
    "CSV attachment always lists everyone).",
    "metrics": "Serve Prometheus metrics at /metrics on the HTTP port.",
    "http_host": "The address the console and the HTTP endpoints listen on.",
    "http_port": "Their port.",
    "webhook_secret": "whsec_ + base64, as Standard Webhooks issues: turns on "
    "/webhooks/completions.",
    "xapi_username": "The login a learning system uses to post xAPI statements.",
    "xapi_password": "Its password: turns on /xapi/statements.",
    "http_max_connections": "HTTP connections served at once.",
    "http_read_timeout": "Seconds a client has to send a request's headers and body.",
    "http_keep_alive": "Seconds an idle HTTP connection is kept open.",
    "http_auth_failures": "Failed sign-ins allowed per client address per minute.",
    "console": "Serve the web console.",
    "web_secret": "Signs the console's session cookies. Unset: a random key per process "
    "(sessions end on restart); replicas behind one address need the same one.",
    "web_trusted_header": "Single sign-on behind a reverse proxy: the request header that "
    "carries the login (off unless WEB_TRUSTED_PROXIES is set too).",
    "web_trusted_proxies": 'The proxies trusted for that header, a JSON list: ["10.0.0.5"].',
    "web_session_hours": "Hours a console sign-in lasts.",
    "batch_size": "Messages a sender claims at a time.",
    "lease_seconds": "Seconds a claim lasts before another sender may take the message.",
    "max_attempts": "Attempts at a deferred message before it fails.",
    "retry_max_age_hours": "Hours a deferred message is retried, from its first attempt.",
    "unknown_policy": "No reply after a message was handed over: resend (same Message-ID) or "
    "hold it for an operator.",
    "worker_name": "This process's name in the database (else host:pid).",
    "db_retry_seconds": "How long `run --once` waits for a database that went away.",
    "public_url": "The address people reach this service at: the personal links in the "
    "emails (PUBLIC_URL/r/...) start with it.",
    "link_secret": "Signs the personal links in the emails (at least 32 characters; "
    "required while the program takes requests). `pshnotify new` wrote a random one.",
    "link_secret_old": "The previous LINK_SECRET after a rotation: links signed with it "
    "stay valid.",
    "smtp_allow_plain_auth": "Allow sending the SMTP password without TLS to a relay on "
    "another machine (only on a trusted network).",
}


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr | Path):
        return str(value)
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def env_template() -> str:
    """Every PSHNOTIFY_* setting, commented out at its default, with what it does."""
    lines = [
        "# pshnotify's settings for this campaign folder. pshnotify reads this file from",
        "# the folder it runs in; a variable in the environment wins over the one here.",
        "# Every setting is shown commented out at its default: uncomment to change it.",
        "# It will hold passwords: keep it readable by its owner only (chmod 600).",
    ]
    for name, field in Settings.model_fields.items():
        lines.append("")
        about = DESCRIPTIONS[name]
        lines += textwrap.wrap(about, 78, initial_indent="# ", subsequent_indent="# ")
        if name == "link_secret":  # the shipped program takes requests: links need a key
            lines.append(f"{ENV_PREFIX}{name.upper()}={secrets.token_hex(24)}")
            continue
        lines.append(f"# {ENV_PREFIX}{name.upper()}={_value(field.default)}")
    return "\n".join(lines) + "\n"
