#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates/reference.json: what transformers' apply_chat_template
renders from the chat templates the model families ship, for conversations that walk their
branches (system prompt, multilingual turns, add_generation_prompt on and off, Qwen3's thinking
and tool branches, Llama 3.2's tools and date, Mistral's tool calls, the errors Gemma raises).

Usage: /work/venvs/trl/bin/python scripts/make_chat_template_fixtures.py   (transformers 5)

The templates are the published texts, one file each in tests/fixtures/chat_templates/:
  qwen2.5.jinja    Qwen2.5-Instruct            qwen3.jinja      Qwen3
  llama3.2.jinja   Llama 3.2 Instruct          mistral-nemo.jinja  Mistral Nemo Instruct 2407
  gemma2.jinja     Gemma 2 it                  gemma3.jinja     Gemma 3 it
  phi3.5.jinja     Phi-3.5 mini instruct       phi4.jinja       Phi-4
Each renders with the special tokens of the tokenizer fixture of its family
(tests/fixtures/tokenizers/), recorded beside the text. Messages, tools and extra variables are
stored as JSON text so the Rust test reads their keys in the order Python keeps them (`tojson`
prints them in that order). Templates that print today's date (`strftime_now`) have it replaced
by "<today>" in the text; the test does the same with the date it renders.
"""

import datetime
import json
import pathlib

import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "tests" / "fixtures" / "chat_templates"
TOKENIZERS = ROOT / "tests" / "fixtures" / "tokenizers"

# template file -> tokenizer fixture whose special tokens it renders with
TEMPLATES = {
    "qwen2.5": "qwen2",
    "qwen3": "qwen2",
    "llama3.2": "llama-bpe",
    "mistral-nemo": "llama-spm",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "phi3.5": "llama-spm",
    "phi4": "qwen2",
}

SYSTEM = "Du bist ein hilfreicher Assistent. 回答要简短。"
USER_1 = "¿Qué hora es en Tokio? 東京は今何時ですか？"
ASSISTANT_1 = "En Tokio son las 9 de la mañana. 😀"
USER_2 = "مرحبا! Et à Paris, quelle heure est-il ?"

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Grüße aus München! Wie geht's?"}],
    "multi_turn": [
        {"role": "user", "content": USER_1},
        {"role": "assistant", "content": ASSISTANT_1},
        {"role": "user", "content": USER_2},
    ],
    "system_multi_turn": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER_1},
        {"role": "assistant", "content": ASSISTANT_1},
        {"role": "user", "content": USER_2},
    ],
    "whitespace": [
        {"role": "user", "content": "  \n Leading and trailing spaces 👍🏽 \n\n"},
        {"role": "assistant", "content": "\tTabs\tinside\tand a newline at the end\n"},
    ],
    "roles_out_of_order": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Das Wetter für eine Stadt, z. B. Zürich.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "Name der Stadt"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "default": 1.5},
            },
            "required": ["city"],
        },
    },
}

TOOL_CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Wie ist das Wetter in Zürich?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "abc123xyz",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "abc123xyz", "content": '{"temperature": 21, "sky": "sonnig ☀️"}'},
    {"role": "assistant", "content": "In Zürich sind es 21 °C und sonnig."},
]

THINKING = [
    {"role": "user", "content": "Was ist 17 × 3?"},
    {"role": "assistant", "content": "<think>\n17 × 3 = 51.\n</think>\n\n17 × 3 = 51."},
    {"role": "user", "content": "和 18 × 3 呢？"},
]

# (template, case name, messages, tools, extra variables); every case renders with
# add_generation_prompt on and off.
SPECIAL = [
    ("qwen3", "thinking_history", THINKING, None, {}),
    ("qwen3", "thinking_off", THINKING, None, {"enable_thinking": False}),
    ("qwen3", "thinking_last", THINKING[:2], None, {}),
    ("qwen3", "tools", TOOL_CONVERSATION, [WEATHER_TOOL], {}),
    (
        "qwen3",
        "tool_response_in_user_turn",
        [
            {"role": "user", "content": "Zürich?"},
            {"role": "assistant", "content": "<think>\nich frage das Werkzeug\n</think>\n\nMoment."},
            {"role": "user", "content": "<tool_response>\n21 °C\n</tool_response>"},
        ],
        None,
        {},
    ),
    ("qwen2.5", "tools", TOOL_CONVERSATION, [WEATHER_TOOL], {}),
    ("llama3.2", "tools", TOOL_CONVERSATION[:4], [WEATHER_TOOL], {}),
    ("llama3.2", "date_string", CONVERSATIONS["system_multi_turn"], None, {"date_string": "26 Jul 2024"}),
    ("llama3.2", "tools_in_system", TOOL_CONVERSATION[:4], [WEATHER_TOOL], {"tools_in_user_message": False}),
    ("mistral-nemo", "tools", TOOL_CONVERSATION[1:], [WEATHER_TOOL], {}),
]


def render(tok, template, messages, tools, extra, add_generation_prompt):
    try:
        text = tok.apply_chat_template(
            messages,
            tools=tools,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **extra,
        )
    except Exception as e:  # the template's raise_exception: the message is the fixture
        return {"error": str(e)}
    today = datetime.datetime.now().strftime("%d %b %Y")
    return {"text": text.replace(today, "<today>")}


def main():
    cases = []
    tokenizers = {}
    for name, tok_name in TEMPLATES.items():
        template = (DIR / f"{name}.jinja").read_text()
        tok = tokenizers.setdefault(tok_name, transformers.AutoTokenizer.from_pretrained(TOKENIZERS / tok_name))
        runs = [(name, case, msgs, None, {}) for case, msgs in CONVERSATIONS.items()]
        runs += [r for r in SPECIAL if r[0] == name]
        for _, case, messages, tools, extra in runs:
            for add in (True, False):
                variables = dict(extra)
                if tools is not None:
                    variables["tools"] = tools
                cases.append(
                    {
                        "template": name,
                        "name": case,
                        "add_generation_prompt": add,
                        "bos_token": tok.bos_token,
                        "eos_token": tok.eos_token,
                        "messages": json.dumps(messages, ensure_ascii=False),
                        "variables": json.dumps(variables, ensure_ascii=False),
                        **render(tok, template, messages, tools, extra, add),
                    }
                )
    out = {"transformers": transformers.__version__, "cases": cases}
    (DIR / "reference.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} renders of {len(TEMPLATES)} templates ({errors} raise)")


if __name__ == "__main__":
    main()
