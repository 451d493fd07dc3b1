"""Hugging Face-style Jinja chat templates, written for our tests.

Each entry is modelled on the public ``chat_template`` of one model family, as published in
that model's ``tokenizer_config.json``: same whitespace, same use of ``bos_token`` and
``eos_token``, same handling of system messages, same ``add_generation_prompt`` behaviour and
same ``raise_exception`` calls. The strings below are the JSON-decoded template sources, so a
``\\n`` written here is a Jinja escape inside a Jinja string literal (as in the Llama-2
template), while a real newline is a newline in the template source.

Render them the way transformers does: ``jinja2.sandbox.ImmutableSandboxedEnvironment`` with
``trim_blocks=True`` and ``lstrip_blocks=True``, passing ``messages``, ``bos_token``,
``eos_token``, ``add_generation_prompt`` and a ``raise_exception`` callable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooTemplate:
    name: str  # family, e.g. "chatml"
    jinja: str  # the Jinja chat template source (tokenizer_config.json "chat_template")
    bos_token: str  # e.g. "<s>", "" when the family has none
    eos_token: str
    supports_system: bool  # False when the template raises on a system message
    trims_content: bool  # True when the template strips/trims message content


# Plain ChatML (OpenHermes, Felladrin/*-Chat, many fine-tunes): no default system, no bos.
CHATML = ZooTemplate(
    name="chatml",
    jinja=(
        "{% for message in messages %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    bos_token="",
    eos_token="<|im_end|>",
    supports_system=True,
    trims_content=False,
)

# HuggingFaceTB/SmolLM2-*-Instruct: ChatML plus a default system message when the first
# message is not a system one. (SmolLM2's tokenizer_config declares bos_token "<|im_start|>",
# but the template never emits bos_token, so there is no bos to speak of here.)
CHATML_DEFAULT_SYSTEM = ZooTemplate(
    name="chatml_default_system",
    jinja=(
        "{% for message in messages %}"
        "{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    bos_token="",
    eos_token="<|im_end|>",
    supports_system=True,
    trims_content=False,
)

# meta-llama/Meta-Llama-3-8B-Instruct.
LLAMA3 = ZooTemplate(
    name="llama3",
    jinja=(
        "{% set loop_messages = messages %}"
        "{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
        "{{ content }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}"
    ),
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    supports_system=True,
    trims_content=True,
)

# meta-llama/Llama-2-7b-chat-hf. Has no add_generation_prompt branch: the prompt already ends
# with "[/INST]". Note the "\\n" below: escapes inside Jinja string literals, as in the JSON.
LLAMA2 = ZooTemplate(
    name="llama2",
    jinja=(
        "{% if messages[0]['role'] == 'system' %}"
        "{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}"
        "{% else %}"
        "{% set loop_messages = messages %}"
        "{% set system_message = false %}"
        "{% endif %}"
        "{% for message in loop_messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if loop.index0 == 0 and system_message != false %}"
        "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' "
        "+ message['content'] %}"
        "{% else %}"
        "{% set content = message['content'] %}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}"
        "{% endif %}"
        "{% endfor %}"
    ),
    bos_token="<s>",
    eos_token="</s>",
    supports_system=True,
    trims_content=True,
)

# mistralai/Mistral-7B-Instruct-v0.3 (the mid-2024 template, with the tool-calling branches
# left out: [AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS]). The system message goes in front
# of the LAST user message, and only when the conversation ends on a user turn. Only assistant
# content is trimmed. No add_generation_prompt branch: the prompt already ends with "[/INST]".
MISTRAL = ZooTemplate(
    name="mistral",
    jinja="""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{#- This block checks for alternating user/assistant messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must \
alternate user/assistant/user/assistant/...") }}
    {%- endif %}
    {%- set ns.index = ns.index + 1 %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception \
of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
""",
    bos_token="<s>",
    eos_token="</s>",
    supports_system=True,
    trims_content=True,
)

# google/gemma-2-2b-it (same for 9b/27b). The assistant role is rendered as "model".
# Real Gemma's eos_token is "<eos>"; the end of a turn is "<end_of_turn>", which is what
# generation stops on, so it is recorded as eos_token here.
GEMMA = ZooTemplate(
    name="gemma",
    jinja=(
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}"
        "{% endif %}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if (message['role'] == 'assistant') %}"
        "{% set role = 'model' %}"
        "{% else %}"
        "{% set role = message['role'] %}"
        "{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
    ),
    bos_token="<bos>",
    eos_token="<end_of_turn>",
    supports_system=False,
    trims_content=True,
)

# microsoft/Phi-3-mini-4k-instruct (the July 2024 template). The template never emits
# bos_token. eos_token is "<|endoftext|>" and is appended when add_generation_prompt is false;
# the end of a turn is "<|end|>".
PHI3 = ZooTemplate(
    name="phi3",
    jinja=(
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}"
        "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'user' %}"
        "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
        "{% elif message['role'] == 'assistant' %}"
        "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    bos_token="<s>",
    eos_token="<|endoftext|>",
    supports_system=True,
    trims_content=False,
)

# HuggingFaceH4/zephyr-7b-beta. Multi-line source: trim_blocks eats the newline after each
# {% ... %} tag but not after {{ ... }}, which is where the "\n" after each eos_token and
# after the generation prompt come from.
ZEPHYR = ZooTemplate(
    name="zephyr",
    jinja=(
        "{% for message in messages %}\n"
        "{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
        "{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n"
        "{{ '<|assistant|>' }}\n"
        "{% endif %}\n"
        "{% endfor %}"
    ),
    bos_token="<s>",
    eos_token="</s>",
    supports_system=True,
    trims_content=False,
)

# Alpaca-style template of the kind people put in tokenizer_config.json for Alpaca fine-tunes
# of Llama: the stock preamble, replaced by the system message when there is one.
ALPACA = ZooTemplate(
    name="alpaca",
    jinja=(
        "{% if messages[0]['role'] == 'system' %}"
        "{% set system_message = messages[0]['content'] %}"
        "{% set loop_messages = messages[1:] %}"
        "{% else %}"
        "{% set system_message = 'Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.' %}"
        "{% set loop_messages = messages %}"
        "{% endif %}"
        "{{ bos_token + system_message }}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'user' %}"
        "{{ '\\n\\n### Instruction:\\n' + message['content'] }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ '\\n\\n### Response:\\n' + message['content'] + eos_token }}"
        "{% else %}"
        "{{ raise_exception('Only user and assistant roles are supported "
        "after the optional system message!') }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '\\n\\n### Response:\\n' }}{% endif %}"
    ),
    bos_token="<s>",
    eos_token="</s>",
    supports_system=True,
    trims_content=False,
)

# mistralai/Mistral-7B-Instruct-v0.1 (the original template). Any system message raises: a
# leading one trips the alternation check first ("Conversation roles must alternate ..."),
# one in a user slot trips "Only user and assistant roles are supported!".
MISTRAL_V1 = ZooTemplate(
    name="mistral_v1",
    jinja=(
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token + ' ' }}"
        "{% else %}"
        "{{ raise_exception('Only user and assistant roles are supported!') }}"
        "{% endif %}"
        "{% endfor %}"
    ),
    bos_token="<s>",
    eos_token="</s>",
    supports_system=False,
    trims_content=False,
)


ZOO: dict[str, ZooTemplate] = {
    t.name: t
    for t in (
        CHATML,
        CHATML_DEFAULT_SYSTEM,
        LLAMA3,
        LLAMA2,
        MISTRAL,
        GEMMA,
        PHI3,
        ZEPHYR,
        ALPACA,
        MISTRAL_V1,
    )
}
