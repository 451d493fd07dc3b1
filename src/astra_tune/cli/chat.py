"""`astra chat`: talk to a model in the terminal, or ask one question with -p."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console

from astra_tune.chat import (
    ChatEngine,
    Engine,
    GenerationOptions,
    Message,
    load_chat,
    prepare_chat,
)


def chat(
    model: str = typer.Argument(
        ..., help="Catalog name, registry NAME[:TAG], HF directory, .gguf file or hub id."
    ),
    prompt: str | None = typer.Option(
        None, "-p", "--prompt", help="Ask one question, print only the answer, and exit."
    ),
    system: str | None = typer.Option(None, "--system", help="System prompt for the conversation."),
    temperature: float = typer.Option(
        GenerationOptions.temperature,
        "--temperature",
        min=0.0,
        max=5.0,
        help="Sampling temperature; 0 is greedy.",
    ),
    top_p: float = typer.Option(
        GenerationOptions.top_p, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."
    ),
    max_tokens: int = typer.Option(
        GenerationOptions.max_tokens, "--max-tokens", min=1, help="Most tokens per answer."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for reproducible sampling."),
    engine: str = typer.Option(
        "auto",
        "--engine",
        help="auto (GGUF → llama.cpp, else transformers), transformers, llama.cpp.",
    ),
    lora: Path | None = typer.Option(
        None, "--lora", help="llama.cpp adapter GGUF to apply on a .gguf base model."
    ),
) -> None:
    """Chat with a model using its own chat template, streaming the answer."""
    if engine not in ("auto", "transformers", "llama.cpp"):
        raise typer.BadParameter("choose auto, transformers or llama.cpp", param_hint="--engine")
    status = Console(stderr=True)
    # Preparing may show its own progress bar (first use dequantizes), so it runs before
    # the spinner: rich allows one live display at a time.
    target = prepare_chat(model, engine=engine, console=status, lora=lora)  # type: ignore[arg-type]
    with status.status(f"loading {model}…"):
        session = load_chat(target)
    options = GenerationOptions(
        temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed
    )
    system = system if system is not None else target.system
    history: list[Message] = [{"role": "system", "content": system}] if system else []
    try:
        if prompt is not None:
            _answer(session, [*history, {"role": "user", "content": prompt}], options)
        else:
            _interactive(session, history, options, system, status)
    finally:
        session.close()


def _answer(session: ChatEngine, messages: list[Message], options: GenerationOptions) -> str:
    """Stream one answer to stdout; Ctrl-C stops it and keeps what was said."""
    cancel = threading.Event()
    parts: list[str] = []
    stream = session.stream(messages, options, cancel)
    try:
        for text in stream:
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        cancel.set()
        sys.stdout.write(" [stopped]")
    finally:
        stream.close()  # stops and joins the generation thread now, not at GC time
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)


def _interactive(
    session: ChatEngine,
    history: list[Message],
    options: GenerationOptions,
    system: str | None,
    console: Console,
) -> None:
    # Importing readline gives input() line editing and history; Windows has none.
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401
    console.print(
        f"[bold]{session.description}[/]\n"
        "[dim]/clear forgets the conversation, /system TEXT sets the system prompt, "
        "/exit or Ctrl-D quits[/]",
        highlight=False,
    )
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return
        if text == "/clear":
            history = [{"role": "system", "content": system}] if system else []
            console.print("[dim]conversation cleared[/]")
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = [m for m in history if m["role"] != "system"]
            if system:
                history.insert(0, {"role": "system", "content": system})
            console.print(f"[dim]system prompt {'set' if system else 'cleared'}[/]")
            continue
        history.append({"role": "user", "content": line})
        answer = _answer(session, history, options)
        history.append({"role": "assistant", "content": answer})


__all__ = ["Engine", "chat"]
