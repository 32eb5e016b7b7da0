"""retro.chat_template: a conversation's plain text, the prompt's end, the reply, the Jinja twin."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from retro.chat_template import (
    JINJA_TEMPLATE,
    ChatTurn,
    generation_prompt,
    render_conversation,
    reply_text,
)


def test_one_question_is_exactly_the_question():
    prompt = generation_prompt([ChatTurn("user", "When was Dromilou Works founded?")])
    assert prompt.text == "When was Dromilou Works founded?"  # no markers, no trailing space
    assert not prompt.continues_assistant
    assert reply_text(" 1920.", prompt) == "1920."  # the joiner's space is the template's


def test_turns_are_joined_like_the_question_and_answer_documents():
    turns = [
        ChatTurn("system", "  Answer briefly.\n"),
        ChatTurn("user", "When was X founded?"),
        ChatTurn("assistant", "1920."),
        ChatTurn("user", ""),  # empty turns are left out
        ChatTurn("user", "Who founded X?"),
    ]
    assert generation_prompt(turns).text == "Answer briefly. When was X founded? 1920. Who founded X?"
    # A whole conversation (ending with the answer) is a training document of the same form.
    assert render_conversation([*turns, ChatTurn("assistant", "Ada Vell.")]).endswith(
        "Who founded X? Ada Vell."
    )


def test_retrieval_reads_the_conversation_after_its_leading_system_messages():
    def searched(*turns):
        prompt = generation_prompt(list(turns))
        return prompt.text[prompt.query_start :]

    question = ChatTurn("user", "When was X founded?")
    assert searched(question) == "When was X founded?"
    assert searched(ChatTurn("system", " Be brief. "), ChatTurn("system", ""), question) == question.text
    two_systems = (ChatTurn("system", "Be brief."), ChatTurn("system", "Be kind."), question)
    assert searched(*two_systems) == question.text
    later = (
        question,
        ChatTurn("assistant", "1920."),
        ChatTurn("system", "Be brief."),
        ChatTurn("user", "Who?"),
    )
    assert searched(*later) == "When was X founded? 1920. Be brief. Who?"  # only leading ones
    assert (
        searched(ChatTurn("system", "Only instructions.")) == "Only instructions."
    )  # nothing else to search


def test_a_final_assistant_message_is_continued_as_generated():
    prompt = generation_prompt([ChatTurn("user", "When was X founded?"), ChatTurn("assistant", "In 19")])
    assert prompt.text == "When was X founded? In 19" and prompt.continues_assistant
    assert reply_text("20.", prompt) == "20."


def test_bad_conversations_are_refused():
    with pytest.raises(ValueError, match="no text"):
        generation_prompt([ChatTurn("user", "  "), ChatTurn("system", "")])
    with pytest.raises(ValueError, match="unknown chat role"):
        ChatTurn("tool", "x")


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "When was X founded?"}],
        [
            {"role": "system", "content": " Be brief. "},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Line one"}, {"type": "text", "text": "two?"}],
            },
            {"role": "assistant", "content": None},
            {"role": "assistant", "content": "1920."},
            {"role": "user", "content": "\n"},
            {"role": "user", "content": "Who founded X?"},
        ],
    ],
)
def test_the_jinja_template_renders_the_same_text(messages):
    def text(content):
        if content is None:
            return ""
        return content if isinstance(content, str) else "\n".join(p["text"] for p in content)

    expected = render_conversation([ChatTurn(m["role"], text(m["content"])) for m in messages])
    # lm-evaluation-harness and transformers render chat templates in a sandboxed jinja2 environment.
    rendered = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined).from_string(JINJA_TEMPLATE)
    assert rendered.render(messages=messages, add_generation_prompt=True) == expected
