"""The official SDKs against Halberd: only base_url and the key change."""

import time

import anthropic
import openai
import pytest

TEXT = "Halberd says héllo 🌍, twice: héllo 🌍."


def test_openai_chat(openai_client):
    r = openai_client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": TEXT}])
    assert r.choices[0].message.content == TEXT
    assert r.usage.completion_tokens > 0


def test_openai_chat_streamed(openai_client):
    stream = openai_client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": TEXT}], stream=True, extra_headers={"x-mock-chunk-bytes": "3"}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    assert len(chunks) > 10
    # The client did not ask for usage, so no usage-only chunk reaches it.
    assert all(c.choices for c in chunks)


def test_openai_chat_streamed_with_usage(openai_client):
    chunks = list(
        openai_client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": TEXT}], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens > 0


def test_openai_responses(openai_client):
    r = openai_client.responses.create(model="mock-1", input=TEXT)
    assert r.output_text == TEXT


def test_openai_responses_streamed(openai_client):
    with openai_client.responses.stream(model="mock-1", input=TEXT, extra_headers={"x-mock-chunk-bytes": "2"}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert final.output_text == TEXT


def test_openai_embeddings(openai_client):
    # The Python SDK asks for base64 by default and decodes it itself.
    r = openai_client.embeddings.create(model="mock-embed", input=["alpha", "beta"], dimensions=8)
    assert [len(d.embedding) for d in r.data] == [8, 8]
    assert r.data[0].embedding != r.data[1].embedding
    again = openai_client.embeddings.create(model="mock-embed", input="alpha", dimensions=8, encoding_format="float")
    assert again.data[0].embedding == pytest.approx(r.data[0].embedding, rel=1e-6)


def test_openai_models(openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert "mock-1" in ids


def test_anthropic_messages(anthropic_client):
    r = anthropic_client.messages.create(model="mock-1", max_tokens=100, messages=[{"role": "user", "content": TEXT}])
    assert r.content[0].text == TEXT
    assert r.stop_reason == "end_turn"
    assert r.usage.output_tokens > 0


def test_anthropic_count_tokens(anthropic_client):
    short = anthropic_client.messages.count_tokens(
        model="mock-1", messages=[{"role": "user", "content": "Hello there"}]
    )
    longer = anthropic_client.messages.count_tokens(
        model="mock-1",
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello there " * 40}],
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_anthropic_messages_streamed(anthropic_client):
    with anthropic_client.messages.stream(
        model="mock-1", max_tokens=100, messages=[{"role": "user", "content": TEXT}], extra_headers={"x-mock-chunk-bytes": "1"}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert final.usage.output_tokens > 0


WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {"type": "object", "properties": {"input": {"type": "string"}}}},
}


def test_openai_tool_call_round_trip(openai_client):
    messages = [{"role": "user", "content": "Paris"}]
    first = openai_client.chat.completions.create(model="mock-1", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"input":"Paris"}'
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = openai_client.chat.completions.create(model="mock-1", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    assert second.choices[0].message.content == "tool result: sunny, 21C"


def test_openai_tool_call_streamed(openai_client):
    stream = openai_client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "Rome"}], tools=[WEATHER_TOOL_OPENAI], stream=True, extra_headers={"x-mock-chunk-bytes": "4"}
    )
    args = "".join(tc.function.arguments or "" for c in stream if c.choices for tc in (c.choices[0].delta.tool_calls or []))
    assert args == '{"input":"Rome"}'


def test_anthropic_tool_call_round_trip(anthropic_client):
    tools = [{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}}}]
    messages = [{"role": "user", "content": "Oslo"}]
    first = anthropic_client.messages.create(model="mock-1", max_tokens=100, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    use = first.content[0]
    assert use.name == "get_weather" and use.input == {"input": "Oslo"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "snow"}]},
    ]
    second = anthropic_client.messages.create(model="mock-1", max_tokens=100, messages=messages, tools=tools)
    assert second.content[0].text == "tool result: snow"


def test_bad_key_raises_the_sdk_authentication_error(gateway):
    bad = "hbd_notarealkeyatall_000000000000000000000000000000"
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=gateway.base + "/v1", api_key=bad, max_retries=0).chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.base, api_key=bad, max_retries=0).messages.create(
            model="mock-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_errors_reach_the_sdks_in_their_own_shape(openai_client, anthropic_client):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(model="mock-1", messages=[{"role": "wizard", "content": "x"}])
    assert e.value.code == "invalid_request"
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_rotated_key_works_during_grace_and_revoked_key_is_refused(gateway):
    created = gateway.create_key("rotating")
    old, key_id = created["key"], created["id"]
    rotated = gateway.cli("keys", "rotate", key_id, "--grace", "1h")
    new = rotated["key"]
    ask = lambda k: openai.OpenAI(base_url=gateway.base + "/v1", api_key=k, max_retries=0).chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "still here?"}]
    )
    assert ask(old).choices[0].message.content == "still here?"
    assert ask(new).choices[0].message.content == "still here?"
    gateway.cli("keys", "revoke", key_id)
    # The CLI is another process: the server sees its change within the
    # documented key-cache bound (auth.key_cache_ttl, 2 s by default).
    time.sleep(2.2)
    with pytest.raises(openai.AuthenticationError) as e:
        ask(old)
    assert e.value.code == "revoked_api_key"
    assert ask(new).choices[0].message.content == "still here?"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.base, api_key=old, max_retries=0).messages.create(
            model="mock-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_scoped_key_model_not_allowed(gateway):
    scoped = gateway.create_key("scoped", "--models", "mock-1")["key"]
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=scoped, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(model="mock-2", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_allowed"


def test_rate_limited_key_raises_the_sdks_rate_limit_error(gateway):
    key = gateway.create_key("limited", "--rpm", "1")["key"]
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)
    first = client.chat.completions.with_raw_response.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "rate_limited"
    assert int(e.value.response.headers["retry-after"]) >= 1
    with pytest.raises(anthropic.RateLimitError):
        anthropic.Anthropic(base_url=gateway.base, api_key=key, max_retries=0).messages.create(
            model="mock-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


def test_token_limited_key_reports_token_headers(gateway):
    key = gateway.create_key("tokens", "--tpm", "2000")["key"]
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=key, max_retries=0)
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="mock-1", max_completion_tokens=500, messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-ratelimit-limit-tokens"] == "2000"
        assert raw.parse().choices[0].message.content == "hi"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock-1", max_completion_tokens=5000, messages=[{"role": "user", "content": "hi"}])


def test_cost_budget_from_the_cli_ends_in_the_sdks_402(gateway):
    created = gateway.create_key("budgeted", "--budget-usd-daily", "0.00005")
    assert created["limits"]["budget_usd_daily"] == "0.00005"
    client = openai.OpenAI(base_url=gateway.base + "/v1", api_key=created["key"], max_retries=2)
    admitted = 0
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(50):
            # The mock reports 1 + 1 tokens: $0.000003 at its price.
            client.chat.completions.create(
                model="mock-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-mock-usage": "1,1"},
            )
            admitted += 1
    assert e.value.status_code == 402
    assert e.value.code == "budget_exceeded"
    assert e.value.response.headers["x-should-retry"] == "false"
    assert admitted >= 2
    # Usage records are written just after each response ends, off the
    # response path: wait (bounded) for the last one.
    deadline = time.monotonic() + 5
    usage = gateway.cli("users", "usage", "--key", created["id"])
    while usage["daily"]["requests"] < admitted and time.monotonic() < deadline:
        time.sleep(0.05)
        usage = gateway.cli("users", "usage", "--key", created["id"])
    assert usage["daily"]["requests"] == admitted
    assert usage["daily"]["cost_usd"] == f"{admitted * 3 / 1_000_000:.6f}".rstrip("0")
    with pytest.raises(anthropic.APIStatusError) as e:
        anthropic.Anthropic(base_url=gateway.base, api_key=created["key"], max_retries=0).messages.create(
            model="mock-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 402
    assert e.value.body["error"]["type"] == "billing_error"


def test_user_limits_from_the_cli_apply_to_every_key_of_the_user(gateway):
    out = gateway.cli("users", "limits", "e2e-carol", "--rpm", "2")
    assert out["limits"] == {"rpm": 2}
    keys = [gateway.create_key(f"carol-{i}", "--user", "e2e-carol")["key"] for i in range(2)]
    clients = [openai.OpenAI(base_url=gateway.base + "/v1", api_key=k, max_retries=0) for k in keys]
    for c in clients:
        c.chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        clients[0].chat.completions.create(model="mock-1", messages=[{"role": "user", "content": "hi"}])
    assert 'user "e2e-carol"' in e.value.message
