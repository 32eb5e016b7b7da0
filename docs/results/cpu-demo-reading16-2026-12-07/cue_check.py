"""Round 16: reading_check.py with chat prompts ending in an answer cue (CUE from the environment,
e.g. "Answer:"; empty: the shipped template). The cue follows the last user turn after the turn
joiner, as the training conversations of index-cue put it before each answer."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu-demo-reading3-2026-12-03"))
import reading_check  # noqa: E402

import retro.reading_eval as reading_eval  # noqa: E402
from retro.chat_template import TURN_JOINER, ChatPrompt, generation_prompt  # noqa: E402

CUE = os.environ.get("CUE", "")


def cued_prompt(turns):
    prompt = generation_prompt(turns)
    if not CUE or prompt.continues_assistant:
        return prompt
    return ChatPrompt(prompt.text + TURN_JOINER + CUE, False, prompt.query_start)


reading_eval.generation_prompt = cued_prompt

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
