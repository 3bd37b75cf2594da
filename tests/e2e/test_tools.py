"""The tool-call policy's default and structured-output validation, seen by
the official SDKs: a model answer that calls a tool the request did not
declare is refused with `tool_call_not_allowed` (502) before any of the call
reaches the client, whole and streamed, and a declared call passes; an answer
that breaks the JSON schema a strict request asked for is refused with
`output_schema_violation`, naming where, and a matching one passes."""

import anthropic
import openai
import pytest

TOOLS_OPENAI = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
TOOLS_ANTHROPIC = [{"name": "lookup", "input_schema": {"type": "object"}}]
# The mock calls this tool though the request never offers it.
UNDECLARED = {"x-mock-tool-call": "wire_money"}


def test_openai_declared_call_passes(openai_client):
    r = openai_client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "find order 7"}], tools=TOOLS_OPENAI
    )
    assert r.choices[0].message.tool_calls[0].function.name == "lookup"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_undeclared_call_is_refused(openai_client, stream):
    with pytest.raises(openai.APIError) as e:
        result = openai_client.chat.completions.create(
            model="mock-1",
            messages=[{"role": "user", "content": "find order 7"}],
            tools=TOOLS_OPENAI,
            stream=stream,
            extra_headers=UNDECLARED,
        )
        if stream:
            for chunk in result:
                # Nothing of the call may arrive before the error.
                assert not chunk.choices or not chunk.choices[0].delta.tool_calls
    if not stream:
        assert e.value.status_code == 502
    assert e.value.code == "tool_call_not_allowed"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_undeclared_call_is_refused(anthropic_client, stream):
    with pytest.raises(anthropic.APIError) as e:
        if stream:
            with anthropic_client.messages.stream(
                model="mock-1",
                max_tokens=64,
                tools=TOOLS_ANTHROPIC,
                messages=[{"role": "user", "content": "find order 7"}],
                extra_headers=UNDECLARED,
            ) as s:
                for event in s:
                    assert event.type != "content_block_start" or event.content_block.type != "tool_use"
        else:
            anthropic_client.messages.create(
                model="mock-1",
                max_tokens=64,
                tools=TOOLS_ANTHROPIC,
                messages=[{"role": "user", "content": "find order 7"}],
                extra_headers=UNDECLARED,
            )
    assert "tool_call_not_allowed" in str(e.value)
    if not stream:
        assert e.value.status_code == 502


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "w", "strict": True, "schema": SCHEMA}}


def test_openai_structured_answer_that_matches_passes(openai_client):
    r = openai_client.chat.completions.create(
        model="mock-1",
        messages=[{"role": "user", "content": "weather?"}],
        response_format=RESPONSE_FORMAT,
        extra_headers={"x-mock-reply": '{"city": "Lyon", "n": 3}'},
    )
    assert r.choices[0].message.content == '{"city": "Lyon", "n": 3}'


@pytest.mark.parametrize("stream", [False, True])
def test_openai_structured_answer_that_breaks_the_schema_is_refused(openai_client, stream):
    with pytest.raises(openai.APIError) as e:
        result = openai_client.chat.completions.create(
            model="mock-1",
            messages=[{"role": "user", "content": "weather?"}],
            response_format=RESPONSE_FORMAT,
            stream=stream,
            extra_headers={"x-mock-reply": '{"city": "Lyon", "n": "three"}'},
        )
        if stream:
            list(result)
    assert e.value.code == "output_schema_violation"
    assert "/n" in str(e.value)
    if not stream:
        assert e.value.status_code == 502


STRICT_OPENAI = [
    {"type": "function", "function": {"name": "lookup", "strict": True, "parameters": SCHEMA}}
]
STRICT_ANTHROPIC = [{"name": "lookup", "strict": True, "input_schema": SCHEMA}]
BAD_ARGUMENTS = {"x-mock-tool-call": "lookup", "x-mock-tool-arguments": '{"city": "Lyon", "n": "three"}'}


def test_openai_strict_tool_with_valid_arguments_passes(openai_client):
    r = openai_client.chat.completions.create(
        model="mock-1",
        messages=[{"role": "user", "content": "weather?"}],
        tools=STRICT_OPENAI,
        extra_headers={"x-mock-tool-call": "lookup", "x-mock-tool-arguments": '{"city": "Lyon", "n": 3}'},
    )
    assert r.choices[0].message.tool_calls[0].function.arguments == '{"city": "Lyon", "n": 3}'


@pytest.mark.parametrize("stream", [False, True])
def test_openai_strict_tool_with_arguments_its_schema_rejects_is_refused(openai_client, stream):
    with pytest.raises(openai.APIError) as e:
        result = openai_client.chat.completions.create(
            model="mock-1",
            messages=[{"role": "user", "content": "weather?"}],
            tools=STRICT_OPENAI,
            stream=stream,
            extra_headers=BAD_ARGUMENTS,
        )
        if stream:
            list(result)
    assert e.value.code == "tool_arguments_invalid"
    assert "/n" in str(e.value) and "three" not in str(e.value)
    if not stream:
        assert e.value.status_code == 502


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_strict_tool_with_arguments_its_schema_rejects_is_refused(anthropic_client, stream):
    kwargs = dict(
        model="mock-1",
        max_tokens=64,
        tools=STRICT_ANTHROPIC,
        messages=[{"role": "user", "content": "weather?"}],
        extra_headers=BAD_ARGUMENTS,
    )
    with pytest.raises(anthropic.APIError) as e:
        if stream:
            with anthropic_client.messages.stream(**kwargs) as s:
                list(s)
        else:
            anthropic_client.messages.create(**kwargs)
    assert "tool_arguments_invalid" in str(e.value)
    if not stream:
        assert e.value.status_code == 502
