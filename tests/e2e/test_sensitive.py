"""PII and secrets through the gateway, seen by the official SDKs: the mock
upstream echoes (or replies with) text full of values, split into 1-, 3- and
7-byte stream deltas, and every SDK, streamed or not, on both APIs, gets the
fully redacted text. Pseudonyms come back restored; blocks arrive as the SDK's
own error type."""

import anthropic
import openai
import pytest

PII = (
    "Mail jane.doe@example.com or call +44 20 7946 0958; card 4111 1111 1111 1111, SSN 123-45-6789, "
    "IBAN DE89 3704 0044 0532 0130 00, key AKIAUJZDEGXDNCF32EPF, from 192.168.1.20."
)
REDACTED = (
    "Mail [EMAIL] or call [PHONE]; card [CREDIT_CARD], SSN [US_SSN], "
    "IBAN [IBAN], key [SECRET:aws_access_key_id], from [IP_ADDRESS]."
)
# Secrets of several families over several lines, as pasted code: an
# assignment, a URL password, provider tokens, a JWT, an XML password and a PEM
# key inside a comment block. All made up for this test.
SECRETS = (
    "config.py:\n"
    'DB_PASSWORD = "Xk9#mP2$vL7qR4w"\n'
    'DATABASE_URL = "postgres://app:Vq7zL2pWx9@db.internal:5432/app"\n'
    "GITHUB_TOKEN=ghp_kASAOsE1nYEZ9GlGHpYaax7LBejYWo6oScBV\n"
    "GRAFANA_TOKEN=glsa_z9CPVNPkNa1Hedcm4pMbXDuCL1mHoOsF_02e8d28a\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJoYWxiZXJkLXRlc3QiLCJpYXQiOjE3MDAwMDAwMDB9"
    ".q0m3xW1yT8pL4c2nVb7RkS9dF6gH5jA0zE3uY2iO1wQ\n"
    "<password>cackle!9</password>\n"
    "/*\n * -----BEGIN RSA PRIVATE KEY-----\n"
    " * MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    " * KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n"
    " * -----END RSA PRIVATE KEY-----\n */\n"
)
SECRETS_REDACTED = (
    "config.py:\n"
    'DB_PASSWORD = "[SECRET:generic_credential]"\n'
    'DATABASE_URL = "postgres://app:[SECRET:url_password]@db.internal:5432/app"\n'
    "GITHUB_TOKEN=[SECRET:github_token]\n"
    "GRAFANA_TOKEN=[SECRET:grafana_token]\n"
    "Authorization: Bearer [JWT]\n"
    "<password>[SECRET:generic_credential]</password>\n"
    "/*\n * [PRIVATE_KEY]\n */\n"
)
SECRET_VALUES = ["Xk9#mP2", "Vq7zL2pWx9", "ghp_kAS", "glsa_", "eyJhbGci", "cackle", "MIIBOgIB", "KUpRKfFL", "BEGIN RSA"]
VALUES = ["jane.doe@example.com", "7946 0958", "4111 1111 1111 1111", "123-45-6789", "DE89", "AKIAUJZDEGXDNCF32EPF", "192.168.1.20"]

CONFIG = """
[[policies]]
name = "pseudo"
[policies.sensitive]
input = { default = "redact", email = "pseudonymize" }

[[policies]]
name = "outbound"
[policies.sensitive]
input = { default = "off" }
output = { default = "redact" }

[[policies]]
name = "strict"
[policies.sensitive]
input = { default = "redact", secret = "block" }

[[policies]]
name = "strict-out"
[policies.sensitive]
output = { default = "redact", secret = "block" }
"""


@pytest.fixture(scope="module")
def policy_gateway(tmp_path_factory):
    from conftest import Gateway

    gw = Gateway(tmp_path_factory.mktemp("halberd-policies"), CONFIG)
    yield gw
    gw.stop()


def oai(gw, key):
    return openai.OpenAI(base_url=gw.base + "/v1", api_key=key, max_retries=0)


def ant(gw, key):
    return anthropic.Anthropic(base_url=gw.base, api_key=key, max_retries=0)


def chat(client, prompt, chunk, stream, reply=None):
    headers = {"x-mock-chunk-bytes": str(chunk)}
    if reply:
        headers["x-mock-reply"] = reply
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        return client.chat.completions.create(model="mock-1", messages=messages, extra_headers=headers).choices[0].message.content
    chunks = client.chat.completions.create(model="mock-1", messages=messages, stream=True, extra_headers=headers)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def responses(client, prompt, chunk, stream, reply=None):
    headers = {"x-mock-chunk-bytes": str(chunk)}
    if reply:
        headers["x-mock-reply"] = reply
    if not stream:
        return client.responses.create(model="mock-1", input=prompt, extra_headers=headers).output_text
    with client.responses.stream(model="mock-1", input=prompt, extra_headers=headers) as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response().output_text
    assert deltas == final
    return deltas


def messages(client, prompt, chunk, stream, reply=None):
    headers = {"x-mock-chunk-bytes": str(chunk)}
    if reply:
        headers["x-mock-reply"] = reply
    msgs = [{"role": "user", "content": prompt}]
    if not stream:
        return client.messages.create(model="mock-1", max_tokens=200, messages=msgs, extra_headers=headers).content[0].text
    with client.messages.stream(model="mock-1", max_tokens=200, messages=msgs, extra_headers=headers) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message().content[0].text
    assert text == final
    return text


def every_api(openai_client, anthropic_client, prompt, chunk, stream, reply=None):
    """The text as the OpenAI chat, OpenAI Responses and Anthropic SDKs get it."""
    return [
        chat(openai_client, prompt, chunk, stream, reply),
        responses(openai_client, prompt, chunk, stream, reply),
        messages(anthropic_client, prompt, chunk, stream, reply),
    ]


@pytest.mark.parametrize("chunk", [1, 3, 7])
@pytest.mark.parametrize("stream", [False, True])
def test_echoed_prompt_arrives_redacted_on_every_api(openai_client, anthropic_client, chunk, stream):
    for text in every_api(openai_client, anthropic_client, PII, chunk, stream):
        assert text == REDACTED
        assert not any(v in text for v in VALUES)


@pytest.mark.parametrize("chunk", [1, 3, 7])
@pytest.mark.parametrize("stream", [False, True])
def test_model_output_is_redacted_when_the_prompt_was_clean(openai_client, anthropic_client, chunk, stream):
    for text in every_api(openai_client, anthropic_client, "hello", chunk, stream, reply=PII):
        assert text == REDACTED


@pytest.mark.parametrize("chunk", [1, 3, 7])
@pytest.mark.parametrize("stream", [False, True])
def test_pasted_secrets_are_redacted_both_ways(openai_client, anthropic_client, policy_gateway, chunk, stream):
    # Inbound: the default policy redacts the prompt before the provider sees it.
    # Outbound: a policy that leaves prompts alone lets the mock echo the
    # values, and the response (streamed in 1-, 3- and 7-byte deltas) is redacted.
    key = policy_gateway.create_key(f"outbound-{chunk}-{stream}", "--policy", "outbound")["key"]
    for client_openai, client_anthropic in [
        (openai_client, anthropic_client),
        (oai(policy_gateway, key), ant(policy_gateway, key)),
    ]:
        for text in every_api(client_openai, client_anthropic, SECRETS, chunk, stream):
            assert text == SECRETS_REDACTED
            assert not any(v in text for v in SECRET_VALUES)


@pytest.mark.parametrize("stream", [False, True])
def test_pseudonymized_values_come_back_to_the_client(policy_gateway, stream):
    key = policy_gateway.create_key("pseudo", "--policy", "pseudo")["key"]
    prompt = "Forward this to jane.doe@example.com please."
    assert chat(oai(policy_gateway, key), prompt, 3, stream) == prompt
    assert messages(ant(policy_gateway, key), prompt, 3, stream) == prompt
    # A reply that uses the placeholder, as a model would, gets the value.
    assert chat(oai(policy_gateway, key), prompt, 2, stream, reply="Sent to <EMAIL_1>.") == "Sent to jane.doe@example.com."


def test_blocked_secret_is_the_sdks_bad_request_error(policy_gateway):
    key = policy_gateway.create_key("strict", "--policy", "strict")["key"]
    with pytest.raises(openai.BadRequestError) as e:
        chat(oai(policy_gateway, key), PII, 3, False)
    assert e.value.code == "sensitive_data_detected"
    assert "AKIA" not in str(e.value)
    with pytest.raises(anthropic.BadRequestError) as e:
        messages(ant(policy_gateway, key), PII, 3, True)
    assert "sensitive_data_detected" in str(e.value)
    assert "AKIA" not in str(e.value)


def test_a_response_withheld_by_policy_is_a_permission_error_not_a_bad_request(policy_gateway):
    # The "strict" policy blocks secrets in responses: the request was valid,
    # so the SDKs must not call it the client's fault, and must not retry.
    key = policy_gateway.create_key("strict-out", "--policy", "strict-out")["key"]
    reply = "Here: ghp_VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEmvnEN"
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(oai(policy_gateway, key), "hi", 3, False, reply=reply)
    assert e.value.code == "sensitive_data_detected"
    assert e.value.response.headers["x-should-retry"] == "false"
    assert "ghp_" not in str(e.value)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        messages(ant(policy_gateway, key), "hi", 3, False, reply=reply)
    assert "sensitive_data_detected" in str(e.value)
