"""Where alerts go: Slack, Microsoft Teams, e-mail, a JSON webhook; chosen by the environment.

Slack and Teams go through Dagster's own integrations (``dagster-slack``'s ``SlackResource``
and ``slack_sdk``'s webhook client it depends on; ``dagster-msteams``' ``MSTeamsResource`` with
an adaptive card), e-mail through :mod:`smtplib`, the webhook through httpx. Webhook URLs and
tokens are secrets (a Slack or Teams hook URL is its own credential): no error or log names
them, only the setting.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from claims_pipeline import settings
from claims_pipeline.alerts.messages import Alert
from claims_pipeline.delivery.client import is_loopback
from claims_pipeline.errors import ClaimsPipelineError, ConfigurationError
from claims_pipeline.phi import scrub
from claims_pipeline.settings import Setting

TIMEOUT_SECONDS = 15.0

CLAIMS_UI_BASE_URL = Setting("CLAIMS_UI_BASE_URL", "base URL of the Dagster UI, for run links")
CLAIMS_ALERT_WEBHOOK_URL = Setting(
    "CLAIMS_ALERT_WEBHOOK_URL", "URL that receives alerts as JSON (POST)", secret=True
)
CLAIMS_ALERT_SLACK_WEBHOOK_URL = Setting(
    "CLAIMS_ALERT_SLACK_WEBHOOK_URL", "Slack incoming-webhook URL", secret=True
)
CLAIMS_ALERT_SLACK_TOKEN = Setting(
    "CLAIMS_ALERT_SLACK_TOKEN", "Slack bot token (with CLAIMS_ALERT_SLACK_CHANNEL)", secret=True
)
CLAIMS_ALERT_SLACK_CHANNEL = Setting(
    "CLAIMS_ALERT_SLACK_CHANNEL", "Slack channel for the bot token, e.g. #billing-alerts"
)
CLAIMS_ALERT_SLACK_API_URL = Setting(
    "CLAIMS_ALERT_SLACK_API_URL",
    "Slack Web API base URL (GovSlack: https://slack-gov.com/api/)",
    "https://slack.com/api/",
)
CLAIMS_ALERT_TEAMS_WEBHOOK_URL = Setting(
    "CLAIMS_ALERT_TEAMS_WEBHOOK_URL", "Microsoft Teams incoming-webhook URL", secret=True
)
CLAIMS_ALERT_SMTP_HOST = Setting("CLAIMS_ALERT_SMTP_HOST", "SMTP server for alert e-mail")
CLAIMS_ALERT_SMTP_PORT = Setting("CLAIMS_ALERT_SMTP_PORT", "SMTP port", "587")
CLAIMS_ALERT_SMTP_SECURITY = Setting(
    "CLAIMS_ALERT_SMTP_SECURITY", "starttls, ssl or none", "starttls"
)
CLAIMS_ALERT_SMTP_FROM = Setting("CLAIMS_ALERT_SMTP_FROM", "sender address of alert e-mail")
CLAIMS_ALERT_SMTP_TO = Setting("CLAIMS_ALERT_SMTP_TO", "recipients, comma-separated")
CLAIMS_ALERT_SMTP_USERNAME = Setting("CLAIMS_ALERT_SMTP_USERNAME", "SMTP login, if required")
CLAIMS_ALERT_SMTP_PASSWORD = Setting(
    "CLAIMS_ALERT_SMTP_PASSWORD", "SMTP password, if required", secret=True
)

#: Every alert setting, for the README and for tests that must start from a clean slate.
ALERT_SETTINGS: tuple[Setting, ...] = (
    CLAIMS_UI_BASE_URL,
    CLAIMS_ALERT_WEBHOOK_URL,
    CLAIMS_ALERT_SLACK_WEBHOOK_URL,
    CLAIMS_ALERT_SLACK_TOKEN,
    CLAIMS_ALERT_SLACK_CHANNEL,
    CLAIMS_ALERT_SLACK_API_URL,
    CLAIMS_ALERT_TEAMS_WEBHOOK_URL,
    CLAIMS_ALERT_SMTP_HOST,
    CLAIMS_ALERT_SMTP_PORT,
    CLAIMS_ALERT_SMTP_SECURITY,
    CLAIMS_ALERT_SMTP_FROM,
    CLAIMS_ALERT_SMTP_TO,
    CLAIMS_ALERT_SMTP_USERNAME,
    CLAIMS_ALERT_SMTP_PASSWORD,
)


class AlertDeliveryError(ClaimsPipelineError):
    """An alert did not reach a destination; names the destination's setting, never its URL,
    token or password."""


class Destination(Protocol):
    @property
    def name(self) -> str:
        """The setting that configures it, e.g. ``CLAIMS_ALERT_WEBHOOK_URL``: how errors name
        it (read-only: destinations are frozen dataclasses)."""
        ...

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise."""


def _require_secure_url(setting: Setting, url: str) -> str:
    """An http(s) URL; plain http only to loopback (a hook URL is its own credential)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{setting.name} must be an http(s) URL like https://host/...")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{setting.name} uses plain http to a non-loopback host: use https."
        )
    return url


@dataclass(frozen=True)
class WebhookDestination:
    """POSTs :meth:`Alert.as_json` to a URL; any 2xx answer is success."""

    url: str = field(repr=False)  # a hook URL is its own credential
    name: str = CLAIMS_ALERT_WEBHOOK_URL.name

    def send(self, alert: Alert) -> None:
        response = httpx.post(self.url, json=alert.as_json(), timeout=TIMEOUT_SECONDS)
        if not response.is_success:
            raise AlertDeliveryError(f"{self.name}: the receiver answered {response.status_code}.")


@dataclass(frozen=True)
class SlackWebhookDestination:
    """A Slack incoming webhook (``slack_sdk``'s ``WebhookClient``, as dagster-slack uses)."""

    url: str = field(repr=False)  # a hook URL is its own credential
    name: str = CLAIMS_ALERT_SLACK_WEBHOOK_URL.name

    def send(self, alert: Alert) -> None:
        from slack_sdk.webhook import WebhookClient

        response = WebhookClient(self.url, timeout=int(TIMEOUT_SECONDS)).send(
            text=alert.text(), blocks=_slack_blocks(alert)
        )
        if response.status_code != 200:
            raise AlertDeliveryError(f"{self.name}: Slack answered {response.status_code}.")


@dataclass(frozen=True)
class SlackApiDestination:
    """``chat.postMessage`` with a bot token, through dagster-slack's ``SlackResource``."""

    token: str = field(repr=False)
    channel: str
    api_url: str = CLAIMS_ALERT_SLACK_API_URL.default or ""
    name: str = CLAIMS_ALERT_SLACK_TOKEN.name

    def send(self, alert: Alert) -> None:
        from dagster_slack import SlackResource
        from slack_sdk.errors import SlackApiError

        client = SlackResource(token=self.token).get_client()
        client.base_url = self.api_url if self.api_url.endswith("/") else self.api_url + "/"
        client.timeout = int(TIMEOUT_SECONDS)
        try:
            client.chat_postMessage(
                channel=self.channel, text=alert.text(), blocks=_slack_blocks(alert)
            )
        except SlackApiError as error:
            reason = error.response.get("error") if error.response is not None else None
            raise AlertDeliveryError(
                f"{self.name}: Slack refused the message ({reason})."
            ) from None


def _slack_blocks(alert: Alert) -> list[dict[str, Any]]:
    body = alert.text().split("\n", 1)[-1]
    return [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
    ]


@dataclass(frozen=True)
class TeamsDestination:
    """A Teams incoming webhook or Workflows URL, through dagster-msteams (adaptive card)."""

    url: str = field(repr=False)  # a hook URL is its own credential
    name: str = CLAIMS_ALERT_TEAMS_WEBHOOK_URL.name

    def send(self, alert: Alert) -> None:
        from dagster_msteams import MSTeamsResource
        from dagster_msteams.adaptive_card import AdaptiveCard
        from requests import RequestException

        card = AdaptiveCard()
        for line in alert.text().splitlines():
            card.add_attachment(line)
        client = MSTeamsResource(hook_url=self.url, timeout=TIMEOUT_SECONDS).get_client()
        try:
            client.post_message(payload=card.payload)
        except RequestException as error:
            # dagster-msteams raises with the answer's body as the message (no status code).
            answer = scrub(str(error), [self.url])[:200] or type(error).__name__
            raise AlertDeliveryError(
                f"{self.name}: Teams refused the message ({answer})."
            ) from None


@dataclass(frozen=True)
class EmailDestination:
    """Plain-text e-mail over SMTP (STARTTLS by default)."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    name: str = CLAIMS_ALERT_SMTP_HOST.name

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.text())
        context = ssl.create_default_context()
        connect: Callable[..., smtplib.SMTP] = smtplib.SMTP
        if self.security == "ssl":
            connect = lambda host, port, timeout: smtplib.SMTP_SSL(  # noqa: E731
                host, port, timeout=timeout, context=context
            )
        try:
            with connect(self.host, self.port, timeout=TIMEOUT_SECONDS) as smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            raise AlertDeliveryError(
                f"{self.name}: sending to {self.host}:{self.port} failed ({type(error).__name__})."
            ) from None


def destinations_from_environment(prefix: str | None = None) -> list[Destination]:
    """Every destination whose settings are present; an empty list means alerts are off.
    A half-configured destination (a Slack token without a channel, an SMTP host without a
    sender) is a ConfigurationError naming the missing setting.

    With ``prefix`` (a practice's ``alerts_env_prefix``), when any ``<prefix>CLAIMS_ALERT_*``
    variable is set those variables alone choose the destinations (the practice overrides the
    deployment's); otherwise the deployment's ``CLAIMS_ALERT_*`` do."""
    environ = _alert_environment(prefix)
    found: list[Destination] = []
    if url := settings.get(CLAIMS_ALERT_WEBHOOK_URL, environ):
        found.append(WebhookDestination(_require_secure_url(CLAIMS_ALERT_WEBHOOK_URL, url)))
    if url := settings.get(CLAIMS_ALERT_SLACK_WEBHOOK_URL, environ):
        found.append(
            SlackWebhookDestination(_require_secure_url(CLAIMS_ALERT_SLACK_WEBHOOK_URL, url))
        )
    token, channel = (
        settings.get(CLAIMS_ALERT_SLACK_TOKEN, environ),
        settings.get(CLAIMS_ALERT_SLACK_CHANNEL, environ),
    )
    if token or channel:
        found.append(
            SlackApiDestination(
                token=settings.require(CLAIMS_ALERT_SLACK_TOKEN, environ),
                channel=settings.require(CLAIMS_ALERT_SLACK_CHANNEL, environ),
                api_url=_require_secure_url(
                    CLAIMS_ALERT_SLACK_API_URL,
                    settings.require(CLAIMS_ALERT_SLACK_API_URL, environ),
                ),
            )
        )
    if url := settings.get(CLAIMS_ALERT_TEAMS_WEBHOOK_URL, environ):
        found.append(TeamsDestination(_require_secure_url(CLAIMS_ALERT_TEAMS_WEBHOOK_URL, url)))
    if settings.get(CLAIMS_ALERT_SMTP_HOST, environ):
        found.append(_email_from_environment(environ))
    return found


def _email_from_environment(environ: Mapping[str, str]) -> EmailDestination:
    security = settings.require(CLAIMS_ALERT_SMTP_SECURITY, environ).lower()
    if security not in ("starttls", "ssl", "none"):
        raise ConfigurationError(
            f"{CLAIMS_ALERT_SMTP_SECURITY.name} must be starttls, ssl or none."
        )
    recipients = tuple(
        address.strip()
        for address in settings.require(CLAIMS_ALERT_SMTP_TO, environ).split(",")
        if address.strip()
    )
    if not recipients:
        raise ConfigurationError(f"{CLAIMS_ALERT_SMTP_TO.name} names no recipient.")
    username = settings.get(CLAIMS_ALERT_SMTP_USERNAME, environ)
    return EmailDestination(
        host=settings.require(CLAIMS_ALERT_SMTP_HOST, environ),
        port=settings.get_int(CLAIMS_ALERT_SMTP_PORT, 1, environ),
        sender=settings.require(CLAIMS_ALERT_SMTP_FROM, environ),
        recipients=recipients,
        security=security,
        username=username,
        password=settings.require(CLAIMS_ALERT_SMTP_PASSWORD, environ) if username else None,
    )


def _alert_environment(prefix: str | None) -> Mapping[str, str]:
    """The CLAIMS_ALERT_* values in force: ``<prefix>CLAIMS_ALERT_*`` when any is set."""
    if prefix:
        own = {
            setting.name: value
            for setting in ALERT_SETTINGS
            if (value := os.environ.get(prefix + setting.name, "").strip())
        }
        if any(name != CLAIMS_UI_BASE_URL.name for name in own):
            return own
    return os.environ


def ui_base_url() -> str | None:
    """CLAIMS_UI_BASE_URL, for links to runs; None when unset."""
    return settings.get(CLAIMS_UI_BASE_URL)


def send_alert(alert: Alert, destinations: Sequence[Destination]) -> list[str]:
    """Send ``alert`` to every destination, each independently; one line per destination that
    failed (naming its setting). Raises AlertDeliveryError only when *every* destination
    failed, so that a caller can retry without sending twice to a destination that got it."""
    failures: list[str] = []
    for destination in destinations:
        try:
            destination.send(alert)
        except AlertDeliveryError as error:
            failures.append(str(error))
        except (httpx.HTTPError, OSError) as error:
            failures.append(f"{destination.name}: {type(error).__name__}")
    if destinations and len(failures) == len(destinations):
        raise AlertDeliveryError("No alert destination was reached: " + "; ".join(failures))
    return failures
