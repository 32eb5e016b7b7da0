"""The chat template: how a conversation becomes the plain text a model reads, and its reply back.

The demo models are not instruction-tuned: they read prose and question-and-answer documents of
the form "When was Dromilou Works founded? 1920. Who founded Dromilou Works? Ada Vell." (named
sources `reading-qa:train`, `facts-qa:train`). So the template adds nothing a model never saw:

- **No role markers, no special tokens.** Each message is its text with surrounding whitespace
  stripped (a list content is its `text` parts joined by a newline, as vLLM joins them); empty
  messages are left out; the turns in order (system, user and assistant alike) are joined by
  one space, the joiner of the Q&A documents:

      [system "Answer briefly.", user "When was X founded?", assistant "1920.", user "Who founded X?"]
      -> "Answer briefly. When was X founded? 1920. Who founded X?"

- **The prompt ends where the assistant's answer starts**: right after the last user turn, with
  no trailing space. A one-question chat is then exactly the question, token for token the prompt
  a completion (and the reading evaluation) sends, and the model's first token carries the space
  before the answer (" 1920") as in training, not a lone space token it never saw. That leading
  space belongs to the template's joiner, so `reply_text` strips the reply's leading whitespace.
- **A conversation that ends with an assistant message is continued**: the prompt ends at that
  message's text and the reply is its continuation, kept as generated (vLLM's
  `continue_final_message`).
- **A turn has no end marker.** Nothing in the text tells a model where its answer ends, so a
  reply ends at end-of-text, a stop string or the token limit; a model trained only on Q&A
  documents goes on with a next invented question after the answer. Training on conversations
  rendered by `render_conversation`, one conversation per document (so `<eos>` follows the last
  answer), teaches it to stop there.

The retrieval query of a RETRO model follows from the rendered prompt (its last chunk holds the
end of the last user message, so the answer attends to neighbours of the question), with one
exception: **leading system messages are read, not searched.** `ChatPrompt.query_start` is the
character where the first turn after them starts, and a model's retrieval queries read the prompt
from there (`retro.language_model.LanguageModel.stream`). A system message is an instruction, not
what to look up, and BM25 weighs its common words: with the system message in the query, 25 of 288
dev chats lost the passage their bare question retrieved (docs/design.md, thirteenth and
fourteenth rounds).
A client that renders the template itself (`JINJA_TEMPLATE`) sends plain text, which is searched whole.
`JINJA_TEMPLATE` is the same rendering as a Hugging Face style chat template (served by
`/tokenizer_info` for clients such as lm-evaluation-harness that render chats themselves).
This module knows no model, no tokenizer and no HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
TURN_JOINER = " "  # between turns: the joiner of the question-and-answer training documents
PART_JOINER = "\n"  # between the text parts of one message's list content


@dataclass(frozen=True)
class ChatTurn:
    role: str  # one of ROLES
    text: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown chat role {self.role!r}; roles: {', '.join(ROLES)}")


@dataclass(frozen=True)
class ChatPrompt:
    text: str  # what the model is given
    continues_assistant: bool  # the last turn was the assistant's: the reply continues it
    query_start: int = 0  # retrieval queries read text[query_start:]: the leading system messages left out


def render_conversation(turns: Sequence[ChatTurn]) -> str:
    """The conversation as one plain text (also a training document when it ends with an answer)."""
    return TURN_JOINER.join(t.text.strip() for t in turns if t.text.strip())


def generation_prompt(turns: Sequence[ChatTurn]) -> ChatPrompt:
    """The prompt that asks for the assistant's next reply (ValueError for a conversation without text)."""
    spoken = [t for t in turns if t.text.strip()]
    if not spoken:
        raise ValueError("the conversation has no text: every message is empty")
    text = render_conversation(spoken)
    leading_system = next((i for i, t in enumerate(spoken) if t.role != "system"), 0)  # 0: system only
    instructions = render_conversation(spoken[:leading_system])
    query_start = len(instructions) + len(TURN_JOINER) if instructions else 0
    return ChatPrompt(text, continues_assistant=spoken[-1].role == "assistant", query_start=query_start)


def reply_text(generated: str, prompt: ChatPrompt) -> str:
    """The assistant's message from the generated text: the joiner's leading whitespace removed."""
    return generated if prompt.continues_assistant else generated.lstrip()


# The same rendering for clients that apply a chat template themselves (jinja2, as transformers and
# lm-evaluation-harness run it). add_generation_prompt changes nothing: the prompt ends where the
# answer starts either way. tests/service/test_tokenizer_endpoints.py checks it against the above.
JINJA_TEMPLATE = (
    "{%- set ns = namespace(parts=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- elif message['content'] is none -%}{%- set text = '' -%}"
    "{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}"
    "{%- endif -%}"
    "{%- if text | trim -%}{%- set ns.parts = ns.parts + [text | trim] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- ns.parts | join(' ') -}}"
)
