"""Every destination against a local receiver: the webhook, Slack (incoming webhook and Web
API, through dagster-slack), Teams (through dagster-msteams) and SMTP (aiosmtpd)."""

from __future__ import annotations

import pytest

from claims_pipeline.alerts import destinations as d
from claims_pipeline.alerts.destinations import (
    AlertDeliveryError,
    EmailDestination,
    SlackApiDestination,
    SlackWebhookDestination,
    TeamsDestination,
    WebhookDestination,
    destinations_from_environment,
    send_alert,
)
from claims_pipeline.alerts.messages import claims_need_attention_alert
from claims_pipeline.errors import ConfigurationError
from claims_pipeline_tests.alerts.receivers import http_receiver, smtp_receiver

ALERT = claims_need_attention_alert(
    day="2026-11-30",
    run_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    counts={"rejected_by_api": 2, "pending": 1},
    claim_keys={"rejected": ["REF-1042", "REF-1043"], "pending": ["REF-1050"]},
    ui_base_url="http://127.0.0.1:3000",
)
RUN_LINK = "http://127.0.0.1:3000/runs/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.fixture(autouse=True)
def no_alert_settings(monkeypatch):
    for setting in d.ALERT_SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)


def test_the_webhook_receives_the_alert_as_json():
    with http_receiver() as receiver:
        WebhookDestination(f"{receiver.url}/hooks/claims").send(ALERT)
        (request,) = receiver.requests
    assert request.path == "/hooks/claims"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["event"] == "claims_need_attention"
    assert body["day"] == "2026-11-30"
    assert body["counts"] == {"rejected_by_api": 2, "pending": 1}
    assert body["claim_keys"] == {"rejected": ["REF-1042", "REF-1043"], "pending": ["REF-1050"]}
    assert body["run_url"] == RUN_LINK


def test_slack_incoming_webhook_gets_text_and_blocks():
    with http_receiver() as receiver:
        SlackWebhookDestination(f"{receiver.url}/services/T0/B0/x").send(ALERT)
        (request,) = receiver.requests
    body = request.json()
    assert request.path == "/services/T0/B0/x"
    assert body["text"] == ALERT.text()
    assert body["blocks"][0]["text"]["text"] == ALERT.title
    assert "REF-1042" in body["blocks"][1]["text"]["text"]


def test_slack_web_api_posts_to_the_channel_with_the_bot_token():
    with http_receiver() as receiver:
        SlackApiDestination("xoxb-test-token", "#billing", f"{receiver.url}/api").send(ALERT)
        (request,) = receiver.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == "Bearer xoxb-test-token"
    body = request.json()
    assert body["channel"] == "#billing"
    assert RUN_LINK in body["text"]


def test_teams_gets_an_adaptive_card_with_every_line():
    with http_receiver() as receiver:
        TeamsDestination(f"{receiver.url}/workflows/claims").send(ALERT)
        (request,) = receiver.requests
    card = request.json()["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    lines = [block["text"] for block in card["content"]["body"]]
    assert lines == ALERT.text().splitlines()


def test_email_goes_to_every_recipient_with_the_title_as_subject():
    with smtp_receiver() as receiver:
        EmailDestination(
            host=receiver.host,
            port=receiver.port,
            sender="dagster@clinic.example",
            recipients=("billing@clinic.example", "ops@clinic.example"),
            security="none",
        ).send(ALERT)
    (message,) = receiver.messages
    assert receiver.envelopes == [
        ("dagster@clinic.example", ["billing@clinic.example", "ops@clinic.example"])
    ]
    assert message["Subject"] == ALERT.title
    assert message.get_content().splitlines() == ALERT.text().splitlines()


@pytest.mark.parametrize(
    "make",
    [
        lambda url: WebhookDestination(f"{url}/secret-hook-path"),
        lambda url: SlackWebhookDestination(f"{url}/secret-hook-path"),
        lambda url: SlackApiDestination("xoxb-secret", "#c", f"{url}/secret-hook-path/"),
        lambda url: TeamsDestination(f"{url}/secret-hook-path"),
    ],
)
def test_a_refusing_receiver_is_an_error_that_names_the_setting_not_the_url(make):
    with http_receiver(status=500) as receiver:
        destination = make(receiver.url)
        with pytest.raises(AlertDeliveryError) as raised:
            destination.send(ALERT)
    message = str(raised.value)
    assert message.startswith(destination.name)
    assert "secret" not in message and receiver.url not in message


def test_an_unreachable_smtp_server_names_the_setting():
    destination = EmailDestination("127.0.0.1", 9, "a@b.example", ("c@d.example",), "none")
    with pytest.raises(AlertDeliveryError, match="^CLAIMS_ALERT_SMTP_HOST: sending to 127.0.0.1:9"):
        destination.send(ALERT)


def test_one_failing_destination_does_not_stop_the_others():
    with http_receiver() as good, http_receiver(status=503) as bad:
        failures = send_alert(
            ALERT, [TeamsDestination(f"{bad.url}/t"), WebhookDestination(f"{good.url}/w")]
        )
        assert len(good.requests) == 1
    assert failures == [
        "CLAIMS_ALERT_TEAMS_WEBHOOK_URL: Teams refused the message (refused by the test receiver)."
    ]


def test_when_every_destination_fails_sending_raises():
    with http_receiver(status=503) as bad:
        destinations = [WebhookDestination(f"{bad.url}/w"), TeamsDestination(f"{bad.url}/t")]
        with pytest.raises(AlertDeliveryError, match="No alert destination was reached"):
            send_alert(ALERT, destinations)
        assert len(bad.requests) == 2


def test_no_setting_means_alerts_are_off():
    assert destinations_from_environment() == []


def test_every_destination_is_chosen_by_its_settings(monkeypatch):
    monkeypatch.setenv("CLAIMS_ALERT_WEBHOOK_URL", "https://hooks.example.org/claims")
    monkeypatch.setenv("CLAIMS_ALERT_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/x")
    monkeypatch.setenv("CLAIMS_ALERT_SLACK_TOKEN", "xoxb-1")
    monkeypatch.setenv("CLAIMS_ALERT_SLACK_CHANNEL", "#billing")
    monkeypatch.setenv("CLAIMS_ALERT_TEAMS_WEBHOOK_URL", "https://x.webhook.office.com/y")
    monkeypatch.setenv("CLAIMS_ALERT_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("CLAIMS_ALERT_SMTP_FROM", "dagster@example.org")
    monkeypatch.setenv("CLAIMS_ALERT_SMTP_TO", "a@example.org, b@example.org")
    found = destinations_from_environment()
    assert [type(x).__name__ for x in found] == [
        "WebhookDestination",
        "SlackWebhookDestination",
        "SlackApiDestination",
        "TeamsDestination",
        "EmailDestination",
    ]
    email = found[-1]
    assert (email.port, email.security, email.recipients) == (
        587,
        "starttls",
        ("a@example.org", "b@example.org"),
    )
    assert found[2].api_url == "https://slack.com/api/"
    assert "xoxb" not in repr(found[2])


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"CLAIMS_ALERT_SLACK_TOKEN": "xoxb-1"}, "CLAIMS_ALERT_SLACK_CHANNEL"),
        ({"CLAIMS_ALERT_SLACK_CHANNEL": "#c"}, "CLAIMS_ALERT_SLACK_TOKEN"),
        ({"CLAIMS_ALERT_SMTP_HOST": "smtp.example.org"}, "CLAIMS_ALERT_SMTP_TO"),
        (
            {
                "CLAIMS_ALERT_SMTP_HOST": "h",
                "CLAIMS_ALERT_SMTP_TO": "a@b",
                "CLAIMS_ALERT_SMTP_FROM": "c@d",
                "CLAIMS_ALERT_SMTP_SECURITY": "tls13",
            },
            "CLAIMS_ALERT_SMTP_SECURITY",
        ),
        (
            {
                "CLAIMS_ALERT_SMTP_HOST": "h",
                "CLAIMS_ALERT_SMTP_TO": "a@b",
                "CLAIMS_ALERT_SMTP_FROM": "c@d",
                "CLAIMS_ALERT_SMTP_USERNAME": "u",
            },
            "CLAIMS_ALERT_SMTP_PASSWORD",
        ),
        ({"CLAIMS_ALERT_WEBHOOK_URL": "http://hooks.example.org/x"}, "CLAIMS_ALERT_WEBHOOK_URL"),
        ({"CLAIMS_ALERT_TEAMS_WEBHOOK_URL": "ftp://x"}, "CLAIMS_ALERT_TEAMS_WEBHOOK_URL"),
    ],
)
def test_a_half_or_wrongly_configured_destination_names_the_setting(monkeypatch, settings, named):
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=named):
        destinations_from_environment()


def test_a_practice_with_its_own_destinations_overrides_the_deployments(monkeypatch):
    monkeypatch.setenv("CLAIMS_ALERT_WEBHOOK_URL", "https://hooks.example.org/all")
    monkeypatch.setenv("RIVERSIDE_CLAIMS_ALERT_SMTP_HOST", "smtp.riverside.example")
    monkeypatch.setenv("RIVERSIDE_CLAIMS_ALERT_SMTP_FROM", "dagster@example.org")
    monkeypatch.setenv("RIVERSIDE_CLAIMS_ALERT_SMTP_TO", "billing@riverside.example")
    (own,) = destinations_from_environment("RIVERSIDE_")
    assert (type(own).__name__, own.host, own.recipients) == (
        "EmailDestination",
        "smtp.riverside.example",
        ("billing@riverside.example",),
    )
    # A practice without variables of its own alerts where the deployment does.
    (shared,) = destinations_from_environment("LAKESIDE_")
    assert shared.url == "https://hooks.example.org/all"
    assert [type(x) for x in destinations_from_environment()] == [type(shared)]
