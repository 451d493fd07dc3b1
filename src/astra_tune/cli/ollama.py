"""`astra modelfile`, `astra import`, `astra push ollama`: Ollama models without training."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from astra_tune.cli.output import stdout_console
from astra_tune.errors import ConfigError

TEMPLATE_SOURCES = {
    "translated": "translated to an Ollama TEMPLATE (proven)",
    "given": "--template-file",
    "none": "none",
}
push_app = typer.Typer(help="Send a registry model to another server.", no_args_is_help=True)


def _registry() -> Any:
    from astra_tune.registry.store import Registry

    return Registry()


def modelfile(
    args: list[str] = typer.Argument(
        None,
        metavar="FROM | template FILE",
        help="A model (registry NAME[:TAG] or .gguf) to customize; or `template FILE` to "
        "print the Ollama TEMPLATE for the Jinja chat template in FILE (tokenizer_config.json, "
        ".jinja, .gguf or a model directory).",
    ),
    from_file: Path | None = typer.Option(
        None, "--from-file", "-f", help="Register an existing Modelfile (Ollama's syntax)."
    ),
    system: str | None = typer.Option(None, "--system", help="The system prompt."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="NAME=VALUE, e.g. temperature=0.7 (repeat; stop may repeat)."
    ),
    name: str | None = typer.Option(None, "--name", "-n", help="Name of the new model."),
    template_file: Path | None = typer.Option(
        None, "--template-file", help="A hand-written Ollama TEMPLATE to use instead."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the Modelfile (default: ./Modelfile)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a different existing file."),
) -> None:
    """Customize a model without training (system prompt, parameters), or translate templates.

    astra modelfile template FILE          print the Ollama TEMPLATE for FILE's chat template
    astra modelfile FROM --system ... -p temperature=0.7 --name NAME
                                           write a Modelfile and register NAME
    astra modelfile --from-file Modelfile --name NAME
                                           register an existing Modelfile
    """
    args = args or []
    if args[:1] == ["template"]:
        if len(args) != 2:
            raise ConfigError("`astra modelfile template` takes one FILE", where="arguments")
        _print_template(Path(args[1]))
        return
    if from_file is not None:
        if args:
            raise ConfigError("give FROM or --from-file, not both", where="arguments")
        if output is not None or force:
            raise ConfigError(
                "--output and --force write a new Modelfile; --from-file registers one as is",
                where="--output" if output is not None else "--force",
                fix="drop the option, or give FROM instead of --from-file",
            )
        _register_file(from_file, name, system, param, template_file)
        return
    if len(args) != 1:
        raise ConfigError(
            "name the model to customize: astra modelfile FROM [--system TEXT] [--param K=V]",
            where="arguments",
        )
    _customize(args[0], system, param, name, template_file, output, force)


def _print_template(path: Path) -> None:
    from astra_tune.ollama.sources import find_chat_template
    from astra_tune.ollama.translate import translate

    source = find_chat_template(path)
    translation = translate(source.template, bos_token=source.bos_token, eos_token=source.eos_token)
    err = Console(stderr=True)
    same = sum(check.same for check in translation.checks)
    err.print(
        f"# from {source.origin}: system prompt {translation.style.replace('-', ' ')}"
        f"{', default system prompt kept' if translation.default_system else ''}; "
        f"{same}/{len(translation.checks)} probe conversations render identically",
        highlight=False,
    )
    for note in translation.notes:
        err.print(f"# note: {note}", highlight=False)
    typer.echo(translation.modelfile_lines(), nl=False)


def _customize(
    from_: str,
    system: str | None,
    params: list[str],
    name: str | None,
    template_file: Path | None,
    output: Path | None,
    force: bool,
) -> None:
    from astra_tune.ollama.modelfile import Modelfile, parameter_pairs

    template = template_file.read_text(encoding="utf-8") if template_file else None
    modelfile = Modelfile(
        from_=from_, template=template, system=system, parameters=parameter_pairs(params)
    )
    name = name or f"{_default_name(from_)}-custom"
    target = output or Path("Modelfile")
    if Path(from_).expanduser().is_file():
        # FROM is read relative to the Modelfile (by us and by `ollama create`).
        modelfile.from_ = str(Path(from_).expanduser().resolve())
    text = modelfile.text(f"{name}: {from_} customized with Astra Tune")
    _write(target, text, force)
    _register(modelfile, name, target, text)


def _register_file(
    path: Path,
    name: str | None,
    system: str | None,
    params: list[str],
    template_file: Path | None,
) -> None:
    """Register a Modelfile; --system, --param and --template-file override what it says."""
    from astra_tune.ollama.modelfile import parameter_pairs, parse

    if not path.is_file():
        raise ConfigError(f"{path}: no such file", where="--from-file")
    text = path.read_text(encoding="utf-8")
    modelfile = parse(text, str(path))
    if system is not None:
        modelfile.system = system
    # A flag replaces the file's value of that parameter (stops included), not adds to it.
    modelfile.parameters.update(parameter_pairs(params))
    if template_file is not None:
        modelfile.template = template_file.read_text(encoding="utf-8")
    _register(modelfile, name or f"{_default_name(modelfile.from_)}-custom", path, text)


def _register(modelfile: Any, name: str, path: Path, text: str) -> None:
    from astra_tune.ollama.create import create_model

    created = create_model(
        _registry(), modelfile, name, base_dir=path.resolve().parent, text=text, where=str(path)
    )
    pushed = created.pushed
    console = stdout_console()
    done = "already registered, same content" if pushed.existing else "registered"
    console.print(
        f"[green]{done}:[/] {pushed.name}:{pushed.version}  (Modelfile: {path})",
        highlight=False,
    )
    for note in created.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(
        f"  serve it: astra serve -m {pushed.name}\n  chat: astra chat {pushed.name}",
        highlight=False,
    )


def import_gguf(
    path: Path = typer.Argument(..., help="A .gguf model file."),
    name: str | None = typer.Option(None, "--name", "-n", help="Model name (default: file name)."),
    system: str | None = typer.Option(None, "--system", help="A system prompt to store with it."),
    template_file: Path | None = typer.Option(
        None, "--template-file", help="A hand-written Ollama TEMPLATE to use instead."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the Modelfile (default: beside the GGUF)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a different existing file."),
) -> None:
    """Register a downloaded GGUF: read its metadata, write its Modelfile, store it."""
    from astra_tune.cli.output import human_bytes
    from astra_tune.models.gguf_meta import gguf_facts
    from astra_tune.ollama.create import modelfile_for_gguf

    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise ConfigError(f"{path} is not a .gguf file", where="FILE", fix="check the path")
    path = path.resolve()
    facts = gguf_facts(path)
    target = (output or path.parent / "Modelfile").resolve()
    from_text = f"./{path.name}" if target.parent == path.parent else str(path)
    given = template_file.read_text(encoding="utf-8") if template_file else None
    modelfile, choice = modelfile_for_gguf(
        path, from_text=from_text, system=system, given_template=given
    )
    name = name or _default_name(path.stem)
    table = Table(title=f"{path.name}", show_header=False)
    rows = [
        ("architecture", facts["architecture"]),
        ("parameters", f"{facts['parameters'] / 1e6:.1f} M ({facts['size_label'] or '-'})"),
        ("quantization", facts["quantization"] or "-"),
        ("size", human_bytes(path.stat().st_size)),
        ("context length", facts["context_length"]),
        ("special tokens", f"bos {facts['bos_token']!r}  eos {facts['eos_token']!r}"),
        ("chat template", TEMPLATE_SOURCES[choice.source]),
        ("stop", ", ".join(modelfile.parameters.get("stop", [])) or "-"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    stdout_console().print(table)
    text = modelfile.text(f"{name}: imported from {path.name} by Astra Tune")
    _write(target, text, force)
    _register(modelfile, name, target, text)
    for note in choice.notes:
        stdout_console().print(f"[yellow]note:[/] {note}", highlight=False)


@push_app.command("ollama")
def push_ollama(
    reference: str = typer.Argument(..., help="Registry model NAME[:TAG]."),
    host: str | None = typer.Option(
        None, "--host", help="Ollama server URL (default: $OLLAMA_HOST or 127.0.0.1:11434)."
    ),
    as_name: str | None = typer.Option(
        None, "--as", help="Name on the Ollama server (default: NAME:VERSION)."
    ),
    template_file: Path | None = typer.Option(
        None, "--template-file", help="A hand-written Ollama TEMPLATE to use instead."
    ),
) -> None:
    """Upload a registry model to an Ollama server and create it there (then check it)."""
    from astra_tune.ollama.push import push_to_ollama
    from astra_tune.progress import progress_bar

    with progress_bar(transient=True) as bar:
        task = bar.add_task("connecting", total=None)

        def status(text: str, completed: int | None, total: int | None) -> None:
            bar.update(task, description=text, completed=completed or 0, total=total)

        result = push_to_ollama(
            _registry(), reference, host=host, target=as_name, template_file=template_file,
            on_status=status,
        )  # fmt: skip
    console = stdout_console()
    console.print(
        f"[green]pushed:[/] {result.model} to {result.host}  ({len(result.uploaded)} blobs "
        f"uploaded, {len(result.skipped)} already there; last status: "
        f"{result.statuses[-1] if result.statuses else '-'})",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"  run it: OLLAMA_HOST={result.host} ollama run {result.model}", highlight=False)


def _default_name(source: str) -> str:
    base = Path(source).stem if source.lower().endswith(".gguf") else source.split(":")[0]
    base = base.rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._") or "model"


def _write(path: Path, text: str, force: bool) -> None:
    from astra_tune.atomic import write_text

    if path.exists() and path.read_text(encoding="utf-8") != text and not force:
        raise ConfigError(
            f"{path} exists and differs from the Modelfile to write",
            where=str(path),
            fix="pass --force to overwrite it, or -o to write elsewhere",
        )
    write_text(path, text)
