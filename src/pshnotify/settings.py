"""Settings from `PSHNOTIFY_*` environment variables and a `.env` file."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from pshnotify.domain.errors import InputError

ENV_PREFIX = "PSHNOTIFY_"
DEFAULT_MESSAGE_ID_DOMAIN = "pshnotify.invalid"
MIN_WEB_SECRET = 32  # characters of PSHNOTIFY_WEB_SECRET: a guessable key forges any session


class Relay(BaseModel):
    """One more relay (PSHNOTIFY_SMTP_RELAYS, a JSON list): a share of the connections, or a
    fallback tried when a connection to the others cannot be made."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    share: int = Field(default=1, ge=0)
    fallback: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Relative to the folder pshnotify runs in: a campaign folder (`pshnotify new DIR`).
    database_url: str = "sqlite:///var/pshnotify.db"
    program_file: Path = Path("program.toml")
    templates_dir: Path = Path("templates/email")  # missing: the templates shipped with it

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout: float = Field(default=60.0, gt=0)
    smtp_connections: int = Field(default=4, ge=1, le=64)
    # Further relays; the SMTP_* relay above is the first, with share SMTP_SHARE.
    smtp_relays: list[Relay] = []
    smtp_share: int = Field(default=1, ge=0)
    smtp_messages_per_connection: int = Field(default=500, ge=0)  # 0: no limit
    # The relay's published limits, kept by every connection of this process together.
    rate_per_second: float | None = Field(default=None, gt=0)
    rate_per_minute: int | None = Field(default=None, gt=0)
    rate_per_day: int | None = Field(default=None, gt=0)
    # A relay's own "N per unit" (Postfix: smtpd_client_message_rate_limit per
    # anvil_rate_time_unit, in whole seconds).
    rate_per_window: int | None = Field(default=None, gt=0)
    rate_window_seconds: int = Field(default=60, ge=1)
    smtp_ca_file: Path | None = None

    # The sender identity. The visible From and Reply-To come from the program file; these
    # say who the relay should bounce to and which domain names our Message-IDs.
    envelope_from: str | None = None
    message_id_domain: str = DEFAULT_MESSAGE_ID_DOMAIN

    # Bounces. With BOUNCE_ADDRESS each message's envelope sender is bounces+TOKEN@domain, the
    # token naming the message under an HMAC keyed by BOUNCE_SECRET (services.bounces).
    bounce_address: str | None = None
    bounce_secret: SecretStr | None = None
    bounce_maildir: Path | None = None  # where the MTA delivers the bounce address
    bounce_imap_url: str | None = None  # imaps://user@host/INBOX
    bounce_imap_password: SecretStr | None = None
    bounce_imap_ca_file: Path | None = None
    bounce_soft_days: int = Field(default=3, ge=1)  # soft bounces on this many days: marked
    bounce_webhook_secret: SecretStr | None = None  # else WEBHOOK_SECRET signs bounce events
    # The officer's report lists everyone in its body only up to this many people (the CSV
    # attachment always does).
    report_list_limit: int = Field(default=30, ge=0)

    # The HTTP endpoints for completions (Standard Webhooks and xAPI), served by the daemon.
    metrics: bool = True  # GET /metrics (Prometheus) on the daemon's HTTP port
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    webhook_secret: SecretStr | None = None  # "whsec_" + base64, as Standard Webhooks issues
    xapi_username: str | None = None
    xapi_password: SecretStr | None = None
    # The HTTP side's bounds (web/bounds.py, web/throttle.py).
    http_max_connections: int = Field(default=100, ge=1, le=10_000)
    http_read_timeout: float = Field(default=10.0, gt=0, le=300)  # a request's headers + body
    http_keep_alive: float = Field(default=5.0, gt=0, le=300)
    http_auth_failures: int = Field(default=10, ge=1)  # per client address per minute

    # The web console (served on HTTP_HOST/_PORT with the endpoints above).
    console: bool = True
    # Signs the console's session cookies (32 characters at least); unset, a random key per
    # process (sessions end when it restarts, and replicas behind one address need one key).
    web_secret: SecretStr | None = None
    # The reverse proxies in front (addresses or networks): only their X-Forwarded-For and
    # X-Forwarded-Proto are believed, and only they may send the single-sign-on header.
    web_trusted_proxies: list[str] = []
    # Single sign-on behind such a proxy: the login is taken from this request header, on
    # connections whose peer is one of the proxies. Off unless both are set.
    web_trusted_header: str | None = None
    web_session_hours: float = Field(default=12.0, gt=0)
    # The address people reach this server at (behind a proxy: the proxy's): the personal
    # links in the emails are PUBLIC_URL/r/TOKEN, and an https URL makes the console's
    # session cookie Secure whatever scheme a request arrived with (a TLS proxy in front).
    public_url: str = "http://127.0.0.1:8080"
    # Signs those links (at least 32 characters; required when the program enables
    # [requests]). After a change, the former secret in LINK_SECRET_OLD keeps the links of
    # emails already sent working.
    link_secret: SecretStr | None = None
    link_secret_old: SecretStr | None = None

    batch_size: int = Field(default=200, ge=1, le=10_000)
    lease_seconds: int = Field(default=300, ge=1)
    # A message deferred (4xx, connection faults) is retried with backoff until either limit,
    # then failed; the age counts from its first attempt, nights and weekends included (96 h:
    # a Friday-evening deferral still gets Monday's tries). `messages retry` starts it afresh.
    max_attempts: int = Field(default=8, ge=1)
    retry_max_age_hours: float = Field(default=96.0, gt=0)
    # No reply after the data's final dot: the relay may have the message. "resend" sends it
    # again with the same Message-ID (a duplicate at worst, which the Message-ID lets a reader
    # recognise); "hold" leaves it `unknown` for an operator (`pshnotify messages retry`).
    unknown_policy: Literal["resend", "hold"] = "resend"
    worker_name: str | None = None
    # How long `run --once` waits for a database that went away (the daemon waits as long as
    # it takes, logging when it goes and when it returns).
    db_retry_seconds: float = Field(default=60.0, ge=0)
    # AUTH over a connection without TLS sends the password as readable as this file: only to
    # a relay on this machine, unless the operator says the network in between is trusted.
    smtp_allow_plain_auth: bool = False

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> Settings:
        relays = [("PSHNOTIFY_SMTP_TLS", self.smtp_host, self.smtp_tls, self.smtp_password)] + [
            (f"PSHNOTIFY_SMTP_RELAYS[{i}].tls", r.host, r.tls, r.password)
            for i, r in enumerate(self.smtp_relays)
        ]
        for name, host, tls, password in relays:
            in_clear = tls == "none" and password is not None and not is_loopback(host)
            if in_clear and not self.smtp_allow_plain_auth:
                raise ValueError(
                    f"{name}: none would send the SMTP password in clear to {host}; use "
                    "starttls or tls, or set PSHNOTIFY_SMTP_ALLOW_PLAIN_AUTH=true if the "
                    "network to the relay is trusted"
                )
        return self

    @field_validator("message_id_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not value or any(c in value for c in "<>@ \t\r\n"):
            raise ValueError("must be a bare domain such as mail.example.edu")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError(
                f"{value!r} is not an address people can open; write it like "
                "https://training.example.edu (http or https, a host, no query)"
            )
        if any(c in value for c in ' <>"\t\r\n'):
            raise ValueError("must not contain spaces, quotes or angle brackets")
        if parts.username or parts.password:
            raise ValueError("must not carry a user or password")
        return value.rstrip("/")

    @field_validator("link_secret", "link_secret_old")
    @classmethod
    def _link_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("at least 32 characters (for example: openssl rand -hex 32)")
        return value

    @field_validator("web_trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("web_secret")
    @classmethod
    def _web_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_WEB_SECRET:
            raise ValueError(
                f"must be at least {MIN_WEB_SECRET} characters (it signs the console's "
                f"sessions; it has {len(value.get_secret_value())}); make one with "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @property
    def public_https(self) -> bool:
        """The console is reached over HTTPS (PSHNOTIFY_PUBLIC_URL says so)."""
        return urlsplit(self.public_url).scheme == "https"

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from pshnotify.ingest.webhook_signing import parse_secret

            try:
                parse_secret(value.get_secret_value())
            except Exception as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("bounce_imap_url")
    @classmethod
    def _imap_url(cls, value: str | None) -> str | None:
        if value:
            from pshnotify.bounces.sources import parse_imap_url

            parse_imap_url(value)
        return value or None

    @field_validator("bounce_webhook_secret")
    @classmethod
    def _bounce_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return cls._webhook_secret(value)

    @model_validator(mode="after")
    def _bounce_settings(self) -> Settings:
        if self.bounce_address:
            from pshnotify.bounces.verp import Verp

            secret = self.bounce_secret.get_secret_value() if self.bounce_secret else ""
            try:
                Verp(self.bounce_address, secret.encode())
            except ValueError as exc:
                raise ValueError(f"PSHNOTIFY_BOUNCE_ADDRESS / _SECRET: {exc}") from None
        if self.bounce_imap_url and self.bounce_imap_password is None:
            raise ValueError("PSHNOTIFY_BOUNCE_IMAP_PASSWORD: required with BOUNCE_IMAP_URL")
        return self

    def safe_summary(self) -> dict[str, object]:
        """What may be printed or logged: everything but the secret."""
        secrets = (
            "smtp_password",
            "webhook_secret",
            "xapi_password",
            "bounce_secret",
            "bounce_imap_password",
            "bounce_webhook_secret",
            "web_secret",
            "link_secret",
            "link_secret_old",
        )
        data = self.model_dump(exclude=set(secrets))
        for name in secrets:
            data[name] = "set" if getattr(self, name) else "not set"
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address: traffic to it never leaves the machine."""
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning a bad value into an InputError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {msg}" if err["loc"] else msg)  # a check across settings
        raise InputError(problems, hint="fix the environment variable or .env file") from None
