"""Prompt formats: the Llama-2-chat layout exactly as Chinese-Alpaca-2 was trained on it.

Single turn::

    [INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{instruction} [/INST]

Multi-turn (upstream's gradio demo): the system block sits in the first turn only; each finished
turn is followed by ``</s>`` and the next one starts with ``<s>``; the tokenizer adds the very
first ``<s>`` itself::

    [INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{q1} [/INST] {a1}</s><s>[INST] {q2} [/INST]

Other model families use their own chat template (GGUF ``tokenizer.chat_template`` or the HF
tokenizer's ``apply_chat_template``); :func:`to_role_dicts` gives them the messages.
"""

from __future__ import annotations

from typing import Sequence

from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, convert_to_messages

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. 你是一个乐于助人的助手。"
"""Upstream's ``prompts/alpaca-2.txt``, the system prompt used in SFT."""

LONG_ANSWER_SYSTEM_PROMPT = (
    "You are a helpful assistant. 你是一个乐于助人的助手。请你提供专业、有逻辑、内容真实、有价值的详细回复。"
)
"""Upstream's ``prompts/alpaca-2-long.txt``: asks for longer, detailed answers."""

SYSTEM_PROMPTS = {"default": DEFAULT_SYSTEM_PROMPT, "long": LONG_ANSWER_SYSTEM_PROMPT}

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS, EOS = "<s>", "</s>"


def resolve_system_prompt(value: str | None) -> str:
    """None → the default; ``"default"``/``"long"`` → the named upstream prompt; else the text."""
    if value is None:
        return DEFAULT_SYSTEM_PROMPT
    return SYSTEM_PROMPTS.get(value, value)


def _turn(instruction: str, system: str | None) -> str:
    if system is not None:
        return f"{B_INST} {B_SYS}{system}{E_SYS}{instruction} {E_INST}"
    return f"{B_INST} {instruction} {E_INST}"


def format_llama2_chat(
    turns: Sequence[tuple[str, str | None]], system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
) -> str:
    """``turns``: (user, assistant) pairs; the last one's assistant is None (to be generated).

    The result starts without ``<s>`` (the tokenizer adds it); ``system_prompt=None`` gives the
    template without a system block.
    """
    if not turns:
        raise ValueError("no user message to answer")
    parts: list[str] = []
    for i, (user, answer) in enumerate(turns):
        text = _turn(user, system_prompt if i == 0 else None)
        if answer is not None:
            text += f" {answer}{EOS}"
        parts.append(text if i == 0 else BOS + text)
    return "".join(parts)


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)


def split_messages(
    messages: Sequence[BaseMessage], default_system: str | None
) -> tuple[str | None, list[tuple[str, str | None]]]:
    """System text plus (user, assistant) pairs from LangChain messages.

    Several system messages are joined; consecutive user messages are joined with a blank line;
    an assistant message with no user before it is attached to an empty user turn.
    """
    messages = convert_to_messages(messages)
    system_parts: list[str] = []
    turns: list[tuple[str, str | None]] = []
    pending_user: list[str] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            system_parts.append(_text(m))
        elif isinstance(m, AIMessage):
            turns.append(("\n\n".join(pending_user), _text(m)))
            pending_user = []
        else:  # HumanMessage, ChatMessage, tool results: all read as user text
            pending_user.append(_text(m))
    if pending_user:
        turns.append(("\n\n".join(pending_user), None))
    system = "\n".join(system_parts) if system_parts else default_system
    return system, turns


def format_messages_llama2(messages: Sequence[BaseMessage], default_system: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """LangChain messages → the Alpaca-2 prompt (a prompt that ends with ``[/INST]``)."""
    system, turns = split_messages(messages, default_system)
    if not turns or turns[-1][1] is not None:
        # The conversation ends with an assistant message: continue after it is not chat;
        # ask for the next answer to an empty instruction instead of silently misformatting.
        turns.append(("", None))
    return format_llama2_chat(turns, system)


def to_role_dicts(messages: Sequence[BaseMessage], default_system: str | None = None) -> list[dict[str, str]]:
    """OpenAI-style ``[{"role", "content"}]`` for chat templates of other model families."""
    messages = convert_to_messages(messages)
    out: list[dict[str, str]] = []
    has_system = any(isinstance(m, SystemMessage) for m in messages)
    if default_system and not has_system:
        out.append({"role": "system", "content": default_system})
    for m in messages:
        role = "system" if isinstance(m, SystemMessage) else "assistant" if isinstance(m, AIMessage) else "user"
        out.append({"role": role, "content": _text(m)})
    return out


def format_plain(messages: Sequence[BaseMessage]) -> str:
    """Base (continuation) models: the messages' text, joined, to be continued."""
    return "\n\n".join(_text(m) for m in convert_to_messages(messages) if not isinstance(m, SystemMessage))


__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "LONG_ANSWER_SYSTEM_PROMPT",
    "SYSTEM_PROMPTS",
    "format_llama2_chat",
    "format_messages_llama2",
    "format_plain",
    "resolve_system_prompt",
    "split_messages",
    "to_role_dicts",
]


def format_fixed(messages, prompt_format: str, system_prompt: str | None) -> str | None:
    """The prompt for the formats we write ourselves (``llama2-chat`` for Alpaca-2, ``plain`` for
    base models); None when the model's own chat template applies."""
    if prompt_format == "llama2-chat":
        return format_messages_llama2(messages, resolve_system_prompt(system_prompt))
    if prompt_format == "plain":
        return format_plain(messages)
    return None
