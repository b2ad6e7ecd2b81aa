"""The `pixelchat` command: each command is a thin shell over one public function."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Conversational image creation that runs offline on a CPU.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: export the procedural scenes set.")
app.add_typer(data_app, name="data")
users_app = typer.Typer(no_args_is_help=True, help="Server accounts.")
app.add_typer(users_app, name="users")
keys_app = typer.Typer(no_args_is_help=True, help="Server API keys.")
app.add_typer(keys_app, name="keys")
err = Console(stderr=True)


def _flags_show_no_value() -> None:
    """Typer's help prints a flag's type (`--json <bool>`) as if it took a value; a flag takes none, so
    its type column is left empty (`--json` alone turns it on, `--json true` is an error)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "flags_show_no_value", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_show_no_value = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_value()


@contextmanager
def user_errors():
    """Bad input becomes one line on stderr and exit code 2, never a traceback."""
    from pixelchat.engines import UnsupportedOperation
    from pixelchat.text.encoder import EncoderError
    from pixelchat.training.checkpoint import CheckpointError

    try:
        yield
    except (ValueError, CheckpointError, EncoderError, UnsupportedOperation, OSError) as e:
        message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror}: {e.filename}"
        err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True, emoji=False)
        raise typer.Exit(2)


@contextmanager
def progress_steps(total: int):
    """A progress bar on stderr (on a terminal) that names the step running: ``step("loading the model")``
    ends the step before and starts that one; the bar counts steps out of ``total``."""
    if not err.is_terminal:
        yield lambda text: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting", total=total)
        started = False

        def step(text: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=text)
            bar.refresh()  # shown now, however short the step before was

        yield step


def loaded(model, engine: Optional[str], step):
    """The engine serving ``model``, loaded now as a step of its own (engines are cached, so the call the
    command makes next finds it loaded)."""
    from pixelchat.engines import load_engine

    step("loading the model")
    return load_engine(model, engine)


def moderate(*texts: str) -> None:
    """Refuse, before any work, a prompt the content policy blocks (PIXELCHAT_POLICY, PIXELCHAT_MODERATION_ALLOW):
    `PolicyViolation` is a ValueError, so `user_errors` turns it into one line and exit code 2."""
    from pixelchat.safety.moderation import default_moderator

    moderator = default_moderator()
    for text in texts:
        moderator.enforce(text)


def check_outputs(pictures) -> None:
    """The operator's output checkers (PIXELCHAT_OUTPUT_CHECKERS) on every picture before any is written:
    `OutputBlocked` is a ValueError, so one that fails is one line and exit code 2, and nothing is written."""
    from pixelchat.safety.checkers import enforce_output, load_checkers
    from pixelchat.safety.moderation import settings_from_env

    checkers = load_checkers(settings_from_env().output_checkers)
    for image, record in pictures:
        enforce_output(checkers, image, record)


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".pixelchat-write-test"
    probe.touch()
    probe.unlink()
    return path


# The settings of a diffusion pipeline (--engine diffusers); the built-in models refuse them.
def steps_option():
    return typer.Option(None, "--steps", help="Denoising steps of a pipeline (1-1000); default 25.")


def guidance_option():
    return typer.Option(None, "--guidance", help="Classifier-free guidance scale of a pipeline (0-50); default 7.5.")


def scheduler_option():
    return typer.Option(None, "--scheduler", help="A pipeline's scheduler by name: ddim, ddpm, pndm, lms, euler, "
                        "euler-a, heun, dpm++, dpm++-karras, dpm++-single, unipc, deis, flow-euler; default: "
                        "the pipeline's own.")


def device_option():
    return typer.Option(None, "--device", help="Where a pipeline runs: cuda, cuda:N, mps or cpu; default: cuda when "
                        "a GPU is visible, else cpu.")


def dtype_option():
    return typer.Option(None, "--dtype", help="A pipeline's number format: fp16, bf16 or fp32; default: fp16 on a "
                        "GPU, fp32 on the CPU.")


def offload_option():
    return typer.Option(False, "--offload", help="Keep a pipeline's components on the CPU and move each to the GPU "
                        "while it runs (less GPU memory; needs cuda and accelerate).")


def placed(model: Optional[str], engine: Optional[str], device: Optional[str], dtype: Optional[str], offload: bool,
           runtime: Optional[str] = None):
    """--model as it is, or with --device, --dtype or --offload the engine loaded there (a device that is not
    here, or a built-in model, is refused with one line), or with --runtime the built-in engine on that runtime."""
    if device is None and dtype is None and not offload and runtime is None:
        return model
    from pixelchat.engines import engine_kind, load_engine

    if runtime is not None and engine_kind(model, engine) != "gan":
        raise ValueError("--runtime chooses what runs the built-in models; a diffusion pipeline runs in PyTorch")
    return load_engine(model, engine, device=device, dtype=dtype, offload=offload, runtime=runtime)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What to draw."),
    n: int = typer.Option(1, "--n", help="How many images (1-64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the first image; image i uses seed + i."),
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the PNG files."),
    model: Optional[str] = typer.Option(None, "--model", help="A checkpoint, a diffusers pipeline folder or hub id; "
                                        "default: the shipped model."),
    engine: Optional[Literal["gan", "diffusers"]] = typer.Option(
        None, "--engine", help="The engine serving --model; default: diffusers for a pipeline folder, else gan."),
    truncation: Optional[float] = typer.Option(None, "--truncation", help="Truncate z to [-T, T]: less variety, more typical images."),
    size: Optional[int] = typer.Option(None, "--size", help="Picture side: 64, 256 or 512 for the shipped model (default "
                                       "256); a pipeline's, a multiple of 8."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What the picture should not show."),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    scheduler: Optional[str] = scheduler_option(),
    device: Optional[str] = device_option(),
    dtype: Optional[str] = dtype_option(),
    offload: bool = offload_option(),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="What runs the built-in networks: eager, compile, onnx, "
                                          "openvino or int8 (default: PIXELCHAT_RUNTIME, else eager)."),
    attempts: Optional[int] = typer.Option(None, "--attempts", help="Spec models (the shipped one): draws per picture "
                                           "at most while the describer finds something the prompt said missing "
                                           "(default 4; 1: no check, a little faster)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of paths."),
):
    """Draw images for a text prompt."""
    from pixelchat.generate import generate_records, save_generated

    with user_errors(), progress_steps(5) as step:
        step("checking the prompt")
        moderate(prompt, *([negative_prompt] if negative_prompt else []))
        writable_dir(out)
        served = loaded(placed(model, engine, device, dtype, offload, runtime), engine, step)
        step(f"drawing {n} picture{'s' if n > 1 else ''}")
        results = generate_records(prompt, n, seed, model=served, truncation=truncation, size=size, engine=engine,
                                   negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                   scheduler=scheduler, attempts=attempts)
        step("checking the pictures")
        check_outputs((r.image, r.record) for r in results)
        step("writing the files")
        paths = save_generated(results, out)
    if as_json:
        record = results[0].record
        out_json = {"prompt": prompt, "files": [str(p) for p in paths], "seeds": [r.seed for r in results],
                    "model": record["model"]}
        if "spec" in record:  # a spec model: what each picture's spec holds, said or filled in
            out_json["specs"] = [r.record["spec"] for r in results]
        typer.echo(json.dumps(out_json))
    else:
        for p in paths:
            typer.echo(str(p))


@app.command()
def describe(
    image: Path = typer.Argument(..., help="A picture (PNG, JPEG, WebP; any size)."),
    model: Optional[str] = typer.Option(None, "--model", help="The model whose prompt wording to use; default: the shipped one."),
    engine: Optional[Literal["gan", "diffusers"]] = typer.Option(
        None, "--engine", help="The engine serving --model; default: diffusers for a pipeline folder, else gan."),
    describer: Optional[str] = typer.Option(None, "--describer", help="An image-to-text model that describes any "
                                            "picture in free words (a folder saved with save_pretrained, or a hub id: "
                                            "BLIP, GIT, ...); default: $PIXELCHAT_DESCRIBER, else the model's own."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Say what a picture shows: a caption, the attributes with confidences, and a prompt to redraw it."""
    from pixelchat.describe import describe as describe_fn

    with user_errors(), progress_steps(2) as step:
        if describer is None:
            loaded(model, engine, step)
        step("reading the picture")
        d = describe_fn(image, model=model, engine=engine, describer=describer)
    if as_json:
        typer.echo(json.dumps({"image": str(image), **d.to_dict()}))
        return
    if d.familiar is False:
        from pixelchat.vision.describer import UNFAMILIAR

        typer.echo(f"note: {UNFAMILIAR}")
    typer.echo(d.caption)
    if d.attributes:  # an image-to-text model writes free text and reads no scene attributes
        typer.echo("attributes: " + ", ".join(f"{k}={v} ({d.confidence[k]:.2f})" for k, v in d.attributes.items()))
    typer.echo(f"prompt: {d.prompt}")


@app.command()
def edit(
    image: Path = typer.Argument(..., help="The picture to change (ours keep their latent; others are inverted)."),
    instruction: str = typer.Argument(..., help="What to change ('make the clouds pink') or a new prompt."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="At IMAGE's size or at --size: white (or transparent) where it may change."),
    strength: Optional[float] = typer.Option(None, "--strength", help="How far the redraw may move from the picture "
                                             "(0-1); default: 0.35 for the GAN, 0.6 for a pipeline (1 inpainting)."),
    n: int = typer.Option(1, "--n", help="How many results (1-64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the candidates drawn around the picture."),
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the PNG files."),
    model: Optional[str] = typer.Option(None, "--model", help="A checkpoint, a diffusers pipeline folder or hub id; "
                                        "default: the shipped model."),
    engine: Optional[Literal["gan", "diffusers"]] = typer.Option(
        None, "--engine", help="The engine serving --model; default: diffusers for a pipeline folder, else gan."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the result (64, 256 or 512 for the shipped "
                                       "model); default: the picture's own where the model draws it, else 256."),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    scheduler: Optional[str] = scheduler_option(),
    device: Optional[str] = device_option(),
    dtype: Optional[str] = dtype_option(),
    offload: bool = offload_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Edit a picture by instruction; prints the revised prompt and writes the result."""
    from pixelchat.edit import edit as edit_fn
    from pixelchat.generate import save_generated

    with user_errors(), progress_steps(5) as step:
        step("checking the instruction")
        moderate(instruction)
        writable_dir(out)
        served = loaded(placed(model, engine, device, dtype, offload), engine, step)
        step(f"editing: reading the picture and the instruction, drawing {n} result{'s' if n > 1 else ''}")
        result = edit_fn(image, instruction, mask=mask, strength=strength, n=n, seed=seed, model=served, engine=engine,
                         steps=steps, guidance=guidance, scheduler=scheduler,
                         **({"size": size} if size is not None else {}))
        step("checking the pictures")
        check_outputs((r.image, r.record) for r in result.images)
        step("writing the files")
        paths = save_generated(result.images, out, stem=f"{image.stem}-edit")
    if as_json:
        typer.echo(json.dumps({"image": str(image), "instruction": instruction, "files": [str(p) for p in paths],
                               **result.to_dict()}))
        return
    for note in result.revision.notes:
        err.print(f"note: {note}", highlight=False)
    if result.source.get("familiar") is False:
        from pixelchat.vision.describer import UNFAMILIAR

        err.print(f"note: {UNFAMILIAR}; the edit redraws the nearest scene it reads", highlight=False)
    typer.echo(f"revised prompt: {result.revised_prompt}")
    for p in paths:
        typer.echo(str(p))


@app.command()
def vary(
    image: Path = typer.Argument(..., help="The picture to vary."),
    n: int = typer.Option(4, "--n", help="How many variations (1-64)."),
    strength: float = typer.Option(0.5, "--strength", help="How different from the picture (0-1]."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the PNG files."),
    model: Optional[str] = typer.Option(None, "--model", help="A checkpoint, a diffusers pipeline folder or hub id; "
                                        "default: the shipped model."),
    engine: Optional[Literal["gan", "diffusers"]] = typer.Option(
        None, "--engine", help="The engine serving --model; default: diffusers for a pipeline folder, else gan."),
    size: Optional[int] = typer.Option(None, "--size", help="Side of the variations (64, 256 or 512 for the shipped "
                                       "model); default: the picture's own where the model draws it, else 256."),
    steps: Optional[int] = steps_option(),
    guidance: Optional[float] = guidance_option(),
    scheduler: Optional[str] = scheduler_option(),
    device: Optional[str] = device_option(),
    dtype: Optional[str] = dtype_option(),
    offload: bool = offload_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Variations of a picture that keep what it shows."""
    from pixelchat.edit import vary as vary_fn
    from pixelchat.generate import save_generated

    with user_errors(), progress_steps(4) as step:
        writable_dir(out)
        served = loaded(placed(model, engine, device, dtype, offload), engine, step)
        step(f"drawing {n} variation{'s' if n > 1 else ''} of the picture")
        results = vary_fn(image, n=n, strength=strength, seed=seed, model=served, engine=engine, steps=steps,
                          guidance=guidance, scheduler=scheduler, **({"size": size} if size is not None else {}))
        step("checking the pictures")
        check_outputs((r.image, r.record) for r in results)
        step("writing the files")
        paths = save_generated(results, out, stem=f"{image.stem}-var")
    if as_json:
        typer.echo(json.dumps({"image": str(image), "prompt": results[0].prompt, "files": [str(p) for p in paths],
                               "source": results[0].record["vary"]["source"]}))
        return
    for p in paths:
        typer.echo(str(p))


@app.command()
def chat(
    session_file: Optional[Path] = typer.Option(None, "--session", help="A session file to continue (created if missing)."),
    script: Optional[Path] = typer.Option(None, "--script", help="Run the turns in this file (one per line) and stop."),
    out: Path = typer.Option(Path("out/chat"), "--out", help="Folder for each turn's picture."),
    model: Optional[str] = typer.Option(None, "--model", help="A checkpoint, a diffusers pipeline folder or hub id; "
                                        "default: the shipped model."),
    engine: Optional[Literal["gan", "diffusers"]] = typer.Option(
        None, "--engine", help="The engine serving --model; default: diffusers for a pipeline folder, else gan."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed lock for new pictures."),
    style: str = typer.Option("none", "--style", help="Style preset for new pictures (see /styles)."),
    palette: Optional[str] = typer.Option(None, "--palette", help="Hex colours the pictures keep to, e.g. '#1d3557,#e63946'."),
    checks: int = typer.Option(3, "--checks", help="Self-check attempts per change (0: off)."),
    llm_url: Optional[str] = typer.Option(None, "--llm-url", help="An OpenAI-compatible endpoint that rewrites prompts "
                                          "(e.g. http://127.0.0.1:11434/v1); default: $PIXELCHAT_LLM_URL."),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="The language model's name at --llm-url."),
    editor: Optional[str] = typer.Option(None, "--editor", help="An instruction-edit pipeline (folder or hub id, e.g. "
                                         "InstructPix2Pix) that makes the changes to a diffusion model's pictures."),
    similarity: Optional[str] = typer.Option(None, "--similarity", help="An image-text model (CLIP or SigLIP folder or "
                                             "hub id) that checks a diffusion model's pictures against their prompts; "
                                             "default: $PIXELCHAT_SIMILARITY."),
    open_images: bool = typer.Option(False, "--open", help="Open each new picture in the image viewer."),
    draw_anyway: bool = typer.Option(False, "--draw-anyway", help="Draw prompts that name nothing the model draws "
                                     "(else such a turn says what it draws; 'draw it anyway' draws the last one)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per turn."),
):
    """Talk to a picture: draw, change, ask, undo. Commands: /open FILE /undo /history /goto N /styles /save /quit."""
    from pixelchat.conversation import Session
    from pixelchat.conversation.llm import LLMRewriter, rewriter_from_env
    from pixelchat.imagefiles import save_png
    from pixelchat.vision.style import load_styles

    with user_errors():
        lines = script.read_text().splitlines() if script is not None else None
        moderate(*(line.strip() for line in lines or [] if line.strip() and not line.strip().startswith(("#", "/"))))
        writable_dir(out)
        if llm_url:
            if not llm_model:
                raise ValueError("--llm-url needs --llm-model (the model's name at that endpoint)")
            llm = LLMRewriter(llm_url, llm_model, api_key=os.environ.get("PIXELCHAT_LLM_API_KEY") or None)
        else:
            llm = rewriter_from_env()
        if session_file is not None and session_file.exists():
            session = Session.load(session_file)
            session.llm = llm
            session.draw_anyway = session.draw_anyway or draw_anyway
            session.editor, session.similarity = editor or session.editor, similarity or session.similarity
        else:
            session = Session(model=model, seed=seed, style=style, palette=palette, checks=checks, llm=llm,
                              draw_anyway=draw_anyway, editor=editor, similarity=similarity)
        if engine is not None:  # the engine named here serves the session's model (a hub id needs this)
            from pixelchat.engines import load_engine

            session.model = load_engine(session.model, engine)

    out_console = Console(highlight=False, soft_wrap=True)
    written: dict[int, Path] = {}  # turn → the file this chat wrote its picture to

    def say(turn) -> None:
        path = None
        if turn.images:
            record = turn.images[0].info.get("pixelchat") or turn.node.record
            check_outputs([(turn.images[0], record)])
            path = save_png(turn.images[0], out / f"turn-{turn.node.id}.png", record)
            if open_images:
                turn.images[0].show()
        elif turn.node is not None:  # undo, goto, a question: the picture now current
            path = written.get(turn.node.id)
            if path is None:  # a turn of a session continued from a file: not written by this chat yet
                picture = turn.node.output
                record = picture.info.get("pixelchat") or turn.node.record
                check_outputs([(picture, record)])
                path = save_png(picture, out / f"turn-{turn.node.id}.png", record)
        if path is not None:
            written[turn.node.id] = path
        if as_json:
            typer.echo(json.dumps({**turn.to_dict(), "file": str(path) if path else None}))
            return
        from rich.markup import escape

        out_console.print(f"[bold]{escape(turn.reply)}[/bold]", highlight=False)
        if turn.node is not None and turn.kind not in ("describe", "ask"):
            out_console.print(f"  [dim]prompt:[/dim] {escape(turn.prompt)}", highlight=False)
            if turn.node.negative_prompt:
                out_console.print(f"  [dim]negative prompt:[/dim] {escape(turn.node.negative_prompt)}", highlight=False)
        if path:
            out_console.print(f"  [dim]picture:[/dim] {escape(str(path))}", highlight=False)

    def run(line: str) -> bool:
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        if line in ("/quit", "/exit"):
            return False
        with user_errors():
            if line == "/history":
                for n in session.nodes.values():
                    mark = "*" if n.id == session.current else " "
                    typer.echo(f"{mark}{n.id:3d} ← {n.parent or '-'}  {n.kind:8s} {n.message}  →  {n.prompt}")
            elif line.startswith("/goto"):
                arg = line.split(maxsplit=1)[1] if " " in line else ""
                if not arg.isdigit():
                    raise ValueError("usage: /goto N (see /history)")
                say(session.goto(int(arg)))
            elif line == "/save":
                if session_file is None:
                    raise ValueError("start with --session FILE to save")
                typer.echo(f"saved {session.save(session_file)}")
            elif line == "/undo":
                say(session.undo())
            elif line == "/styles":
                for st in load_styles().values():
                    typer.echo(f"{st.name:10s} {st.description}")
            elif line.startswith("/open"):
                arg = line.split(maxsplit=1)[1] if " " in line else ""
                if not arg:
                    raise ValueError("usage: /open FILE (a PNG, JPEG or WebP picture to talk about)")
                say(session.open(Path(arg).expanduser()))
            elif line.startswith(("/style ", "/palette")):
                say(session.turn(line))
            elif line.startswith("/"):
                raise ValueError(f"unknown command {line.split()[0]}; commands: /open FILE /undo /history /goto N "
                                 "/styles /style NAME /palette COLOURS /save /quit")
            else:
                moderate(line)
                with progress_steps(1) as step:
                    step(f"answering: {line}")
                    turn = session.turn(line)
                say(turn)
        return True

    try:
        if lines is not None:
            for line in lines:
                if not run(line):
                    break
        else:
            while True:
                try:
                    line = out_console.input("[bold cyan]you>[/bold cyan] ")
                except EOFError:
                    break
                try:
                    if not run(line):
                        break
                except typer.Exit:
                    continue  # a bad command in the REPL: the error is printed, the chat goes on
    finally:
        if session_file is not None and session.nodes:
            session.save(session_file)


@app.command()
def train(
    ctx: typer.Context,
    data: str = typer.Option("scenes", "--data", help="'scenes', 'digits', or a dataset folder (images + captions, MNIST, CIFAR)."),
    arch: str = typer.Option("textgan", "--arch", help="specgan (data with a schema: scenes, classes) | textgan (free captions) | dcgan"),
    size: int = typer.Option(64, "--size", help="Image side in pixels."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="Minutes of training."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder: checkpoints, samples, stats."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="A run folder or training checkpoint to continue."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    ngf: Optional[int] = typer.Option(None, "--ngf", help="Generator width at full resolution."),
    ndf: Optional[int] = typer.Option(None, "--ndf", help="Discriminator width at full resolution."),
    scenes: Optional[int] = typer.Option(None, "--scenes", help="How many scenes to render (--data scenes)."),
    captions_per_image: Optional[int] = typer.Option(None, "--captions-per-image"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read at most this many images."),
    unconditional: bool = typer.Option(False, "--unconditional", help="dcgan only: ignore the text."),
    bf16: bool = typer.Option(False, "--bf16/--fp32", help="bf16 autocast (pays off only on CPUs with bf16 instructions)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every"),
    clock: Optional[str] = typer.Option(None, "--clock", help="What --time-budget counts: 'wall' or this process's 'cpu' time."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all cores, shared among --nproc processes)."),
    snapshot_minutes: Optional[float] = typer.Option(None, "--snapshot-minutes", help="Keep a generator snapshot every so many minutes."),
    attribute_weight: Optional[float] = typer.Option(None, "--attribute-weight", help="textgan on scenes: weight of the attribute heads (0 = off)."),
    attribute_net: Optional[str] = typer.Option(None, "--attribute-net", help="textgan: attribute heads on the 'discriminator' or a separate 'classifier'."),
    diffaug: Optional[str] = typer.Option(None, "--diffaug", help="Augmentations D sees: comma-separated color, translation, cutout ('' for none)."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps between rows of stats.jsonl."),
    nproc: Optional[int] = typer.Option(None, "--nproc", help="Train in this many processes on this machine (DistributedDataParallel; "
                                        "each takes its share of the batch). Several machines: torchrun, see docs/distributed-training.md."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda (one GPU per process)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Process group of several processes: gloo | nccl (default: nccl on cuda, gloo on cpu)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the options, read the data, train nothing."),
):
    """Train a generator; the checkpoint it writes works as --model everywhere."""
    from pixelchat.train import configure, train as train_fn
    from pixelchat.training import distributed

    model_options = {k: v for k, v in {"ngf": ngf, "ndf": ndf, "attribute_net": attribute_net}.items() if v is not None}
    if unconditional:
        model_options["conditional"] = False
    train_options = {k: v for k, v in {
        "batch_size": batch_size, "scenes": scenes, "captions_per_image": captions_per_image, "limit": limit,
        "bf16": bf16, "seed": seed, "checkpoint_every": checkpoint_every, "sample_every": sample_every,
        "clock": clock, "threads": threads, "snapshot_minutes": snapshot_minutes, "attribute_weight": attribute_weight,
        "diffaug": diffaug, "log_every": log_every, "device": device, "backend": backend,
    }.items() if v is not None}
    options = dict(arch=arch, size=size, out=out, steps=steps, time_budget=time_budget, resume=resume,
                   model_options=model_options, train_options=train_options)
    with user_errors():
        if nproc is not None:
            train_cfg = configure(data, **options)[1]
            distributed.check_launch(nproc, train_cfg.batch_size, train_cfg.device)
        if nproc is not None and nproc > 1 and not dry_run:
            # each process runs this command with the options given here, less --nproc
            args = []
            for p in ctx.command.params:
                if p.name != "nproc" and ctx.get_parameter_source(p.name).name == "COMMANDLINE":
                    value = ctx.params[p.name]
                    args += [p.opts[0] if value else p.secondary_opts[0]] if p.is_flag else [p.opts[0], str(value)]
            code = distributed.launch(nproc, ["-m", "pixelchat.cli", "train", *args])
            if code:
                raise typer.Exit(code)
            return
        final = train_fn(data, dry_run=dry_run, console=err, **options)
    if final is not None:
        typer.echo(str(final))


@app.command()
def evaluate(
    prompts: Path = typer.Option(..., "--prompts", help="JSON lines: {\"prompt\": ..., \"attributes\": {...}} per line."),
    model: Optional[Path] = typer.Option(None, "--model", help="A generator checkpoint; default: the shipped model."),
    n_per_prompt: int = typer.Option(8, "--n-per-prompt", help="Images per prompt (2-64)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first image; prompt i uses seed + i·K …"),
    feature: str = typer.Option("judge", "--feature", help="Feature space of FD/KID/PRDC: judge | inception."),
    judge_path: Optional[Path] = typer.Option(None, "--judge", help="A judge checkpoint; default: the shipped judge."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every figure."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown report with plots and sample grids here."),
    attempts: Optional[int] = typer.Option(None, "--attempts", help="Spec models: draws per picture at most while the "
                                           "self-check finds something said missing (1: the generator alone; "
                                           "default: the engine's)."),
):
    """Score a model: prompt adherence (judged attributes), fidelity and diversity against real renders."""
    from pixelchat.evaluation import EvaluationError, evaluate as evaluate_fn, read_prompts, write_report

    with user_errors():
        try:
            if report is not None:
                writable_dir(report)
            ev = evaluate_fn(read_prompts(prompts), model=model, per_prompt=n_per_prompt, seed=seed, feature=feature,
                             judge_path=judge_path, progress=err.is_terminal, console=err, attempts=attempts)
        except EvaluationError as e:
            raise ValueError(str(e)) from None
        if report is not None:
            err.print(f"report: {write_report(ev, report)}")
    f = ev.figures
    if as_json:
        typer.echo(json.dumps(f))
        return
    for key in ("adherence", "exact_match", "fd", "kid", "precision", "recall", "density", "coverage"):
        if key in f:
            typer.echo(f"{key:12s} {f[key]}")
    if "shuffled_floor" in f:
        typer.echo(f"{'floor':12s} {f['shuffled_floor']['adherence']} (shuffled prompts)")
        typer.echo(f"{'ceiling':12s} {f['real_ceiling']['adherence']} (real renders)")
    typer.echo(f"{'diversity':12s} {f['diversity']}")


@app.command()
def judge(
    images: list[Path] = typer.Argument(..., help="Pictures to judge (PNG, JPEG, WebP, any size)."),
    judge_path: Optional[Path] = typer.Option(None, "--judge", help="A judge checkpoint; default: the shipped judge."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image."),
):
    """Read the scenes attributes off pictures with the evaluation judge (with confidences)."""
    from pixelchat.evaluation.judge import image_to_tensor, load_judge, predict
    from pixelchat.imagefiles import load_image

    with user_errors():
        model = load_judge(judge_path)
        tensors = [image_to_tensor(load_image(p)) for p in images]  # every file checked before any output
        preds = [predict(model, t[None])[0] for t in tensors]
    for path, pred in zip(images, preds):
        if as_json:
            typer.echo(json.dumps({"image": str(path), **pred.to_dict()}))
        else:
            typer.echo(f"{path}: " + ", ".join(f"{k}={v} ({pred.confidence[k]:.2f})" for k, v in pred.attributes.items()))


@app.command("train-judge")
def train_judge(
    out: Path = typer.Option(Path("runs/judge/judge-scenes"), "--out", help="Checkpoint path (.safetensors + .json)."),
    minutes: float = typer.Option(13.0, "--minutes", help="Training time budget."),
    images: int = typer.Option(40000, "--images", help="Fresh renders to train on."),
    width: int = typer.Option(24, "--width", help="Channels of the first stage."),
    seed: int = typer.Option(0, "--seed"),
):
    """Train the evaluation judge on fresh scenes renders; reports held-out accuracy at 64 and 128 px."""
    from pixelchat.evaluation.judge import JudgeConfig, train_judge as train_fn

    with user_errors():
        if minutes <= 0 or images < 100 or width < 4:
            raise ValueError("need minutes > 0, at least 100 images and width >= 4")
        writable_dir(out.parent)
        path = train_fn(out, n_train=images, minutes=minutes, cfg=JudgeConfig(width=width), seed=seed,
                        progress=err.is_terminal, console=err)
    typer.echo(str(path))


@app.command("train-describer")
def train_describer(
    out: Path = typer.Option(Path("runs/describer/describer-scenes"), "--out", help="Checkpoint path (.safetensors + .json)."),
    minutes: float = typer.Option(28.0, "--minutes", help="Training time budget (wall clock)."),
    images: int = typer.Option(30000, "--images", help="Fresh renders to train on."),
    width: int = typer.Option(24, "--width", help="Channels of the first encoder stage."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule over the budget)."),
    init: Optional[Path] = typer.Option(None, "--init", help="A describer checkpoint to continue from."),
    caption_order: str = typer.Option("fixed", "--caption-order", help="fixed | shuffled: the order captions name things in."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all cores)."),
    seed: int = typer.Option(0, "--seed"),
):
    """Train the describer (captioner + attribute heads) on fresh scenes renders; reports held-out accuracy."""
    import torch

    from pixelchat.vision.describer import CAPTION_ORDERS, DescriberConfig, train_describer as train_fn

    with user_errors():
        if minutes <= 0 or images < 100 or width < 4 or lr <= 0:
            raise ValueError("need minutes > 0, at least 100 images, width >= 4 and lr > 0")
        if caption_order not in CAPTION_ORDERS:
            raise ValueError(f"--caption-order must be one of {', '.join(CAPTION_ORDERS)}")
        if threads:
            torch.set_num_threads(threads)
        writable_dir(out.parent)
        path = train_fn(out, n_train=images, minutes=minutes, cfg=DescriberConfig(width=width), seed=seed, lr=lr,
                        init=init, caption_order=caption_order, progress=err.is_terminal, console=err)
    typer.echo(str(path))


@app.command("train-reader")
def train_reader(
    out: Path = typer.Option(Path("runs/reader/reader-scenes"), "--out", help="Checkpoint path (.safetensors + .json)."),
    minutes: float = typer.Option(3.0, "--minutes", help="Training time budget (wall clock)."),
    captions: int = typer.Option(16000, "--captions", help="Training-split captions to learn from."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all cores)."),
    seed: int = typer.Option(0, "--seed"),
):
    """Train the prompt reader (the text path: prompt → scene spec); reports accuracy on held-out phrasings."""
    import torch

    from pixelchat.text.reader import train_reader as train_fn

    with user_errors():
        if minutes <= 0 or captions < 100:
            raise ValueError("need minutes > 0 and at least 100 captions")
        if threads:
            torch.set_num_threads(threads)
        writable_dir(out.parent)
        path = train_fn(out, n_train=captions, minutes=minutes, seed=seed, progress=err.is_terminal)
    typer.echo(str(path))


@app.command("train-upsampler")
def train_upsampler(
    out: Path = typer.Option(Path("runs/upsampler/upsampler-scenes64"), "--out", help="Checkpoint path (.safetensors + .json)."),
    data: str = typer.Option("scenes", "--data", help="scenes (renders at every size) or pictures a dataset reader "
                             "takes (a folder, CIFAR, MNIST), read at the largest size and box-downscaled."),
    images: int = typer.Option(3000, "--images", help="How many training pictures (scenes: renders; a folder: at most)."),
    minutes: float = typer.Option(20.0, "--minutes", help="Training time budget (wall clock)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Stop after this many steps (whichever comes first)."),
    in_size: int = typer.Option(64, "--in-size", help="Side of the pictures it takes (the generator's)."),
    scales: str = typer.Option("4,8", "--scales", help="Upscaling factors, comma-separated (2, 4, 8)."),
    features: int = typer.Option(32, "--features", help="Channels of every convolution."),
    body: int = typer.Option(8, "--body", help="3×3 convolutions after the first."),
    batch_size: int = typer.Option(16, "--batch-size"),
    generator: Optional[str] = typer.Option("default", "--generator", help="A generator whose pictures the "
                                            "consistency term uses ('default': the shipped model; 'none': no term)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all cores)."),
    seed: int = typer.Option(0, "--seed"),
):
    """Train the upsampler (64 px → 256 and 512 px); reports PSNR/SSIM against bicubic on held-out pictures."""
    import torch

    from pixelchat.engines import resolve_model
    from pixelchat.training.upsampler import train_upsampler as train_fn

    with user_errors():
        try:
            factors = tuple(int(s) for s in scales.split(","))
        except ValueError:
            raise ValueError(f"--scales must be integers separated by commas, got {scales!r}") from None
        if threads:
            torch.set_num_threads(threads)
        writable_dir(out.parent)
        gen = None if generator in (None, "none") else resolve_model(None if generator == "default" else generator)
        path = train_fn(out, data=data, n_images=images, in_size=in_size, scales=factors, features=features, body=body,
                        steps=steps, minutes=minutes, batch_size=batch_size, generator=gen, seed=seed,
                        progress=err.is_terminal)
    typer.echo(str(path))


@app.command("train-inverter")
def train_inverter(
    model: Optional[Path] = typer.Option(None, "--model", help="The generator to invert; default: the shipped model."),
    out: Path = typer.Option(Path("runs/inverter/inverter-scenes64"), "--out", help="Checkpoint path (.safetensors + .json)."),
    minutes: float = typer.Option(20.0, "--minutes", help="Training time budget (wall clock)."),
    prompts: int = typer.Option(3000, "--prompts", help="Prompts to condition the generator on."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (default: all cores)."),
    seed: int = typer.Option(0, "--seed"),
):
    """Train the inversion encoder for a generator on (z, text, G(z, text)) triples."""
    import torch

    from pixelchat.engines import resolve_model
    from pixelchat.vision.inversion import train_inverter as train_fn

    with user_errors():
        if minutes <= 0 or prompts < 2:
            raise ValueError("need minutes > 0 and at least 2 prompts")
        if threads:
            torch.set_num_threads(threads)
        writable_dir(out.parent)
        path = train_fn(resolve_model(model), out, minutes=minutes, n_captions=prompts, seed=seed,
                        progress=err.is_terminal, console=err)
    typer.echo(str(path))


@data_app.command("export")
def data_export(
    name: str = typer.Argument(..., help="Dataset to export: scenes."),
    n: int = typer.Option(1000, "--n", help="How many samples."),
    size: int = typer.Option(64, "--size", help="Image side: 32, 64, 128 or 256."),
    out: Path = typer.Option(..., "--out", help="An empty folder."),
    split: str = typer.Option("train", "--split", help="Caption phrasings: train, heldout or all."),
    first_seed: int = typer.Option(0, "--first-seed", help="Seed of the first sample."),
):
    """Write a dataset as images + metadata.jsonl (the imagefolder layout)."""
    from pixelchat.data.export import export_scenes

    with user_errors():
        if name != "scenes":
            raise ValueError(f"unknown dataset {name!r}; available: scenes")
        meta = export_scenes(out, n, size, split=split, first_seed=first_seed, progress=err.is_terminal)
    typer.echo(str(meta))



@app.command()
def verify(
    image: Path = typer.Argument(..., help="A picture file (PNG, JPEG or WebP)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Where a picture came from: its record, parameters, XMP, watermark and C2PA manifest, and whether
    they agree. Exit code 0: found and all agree; 1: nothing found, or the parts disagree; 2: unreadable."""
    from rich.markup import escape

    from pixelchat.safety.verify import summary, verify as verify_fn

    with user_errors():
        report = verify_fn(image)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        out = Console(highlight=False, soft_wrap=True)
        for part, text, good in summary(report):
            style = {True: "green", False: "red", None: "default"}[good]
            out.print(f"[bold]{part:>10}[/bold]  [{style}]{escape(text)}[/{style}]")
    raise typer.Exit(report.exit_code)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    backend: Optional[Literal["local", "ray"]] = typer.Option(
        None, "--backend", help="Where the engine runs: 'local' (in this process) or 'ray' (Ray Serve deployments); "
        "default: PIXELCHAT_BACKEND, else local."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="The Ray cluster to join (--backend ray); "
                                              "default: PIXELCHAT_RAY_ADDRESS or RAY_ADDRESS, else a new local one."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="What runs the built-in networks: eager, compile, onnx, "
                                          "openvino or int8; default: PIXELCHAT_RUNTIME, else int8 where the onnx "
                                          "extra is installed (more pictures a second; pictures about 36 dB from "
                                          "eager's), else eager (bit-exact with `pixelchat generate`)."),
):
    """Run the server: the studio at http://HOST:PORT/, the OpenAI-compatible images API (and our own) at
    /v1 and /api. Settings come from PIXELCHAT_* environment variables (PIXELCHAT_DATA_DIR, ...)."""
    import logging

    import uvicorn

    from pixelchat.server.app import create_app
    from pixelchat.server.config import Settings

    with user_errors():
        if not 1 <= port <= 65535:
            raise ValueError(f"--port must be between 1 and 65535, got {port}")
        chosen = {"backend": backend, "ray_address": ray_address, "runtime": runtime}
        settings = Settings(**{name: value for name, value in chosen.items() if value is not None})
        settings.runtime = serving_runtime(settings)
        application = create_app(settings)  # migrations run here, before the first request
        if settings.backend == "ray":  # join the cluster and deploy now: a bad address or setting stops the start
            from pixelchat.server.ray_backend import ray_engine

            ray_engine(settings)
    # the operator's log: the queue's notes and every moderation decision (one JSON line each)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("pixelchat").addHandler(handler)
    logging.getLogger("pixelchat").setLevel(logging.INFO)
    if settings.runtime:
        logging.getLogger("pixelchat.server").info("the built-in networks run on the %s runtime", settings.runtime)
    # on Ctrl-C or SIGTERM: stop accepting, let requests in flight finish (up to 60 s), then stop the queue
    uvicorn.run(application, host=host, port=port, log_level="info", timeout_graceful_shutdown=60)


def serving_runtime(settings) -> str | None:
    """The runtime a server's built-in model draws with: the one asked for (checked: an unknown name or a
    missing extra stops the start), else int8 where its extra is installed, else eager. A diffusers
    pipeline, or the Ray backend, keeps its own (None)."""
    from pixelchat.engines import engine_kind
    from pixelchat.engines.runtime import RuntimeUnavailable, check_available, runtime_name

    if settings.backend == "ray" or engine_kind(settings.model, settings.engine) != "gan":
        return settings.runtime
    if settings.runtime is not None:
        name = runtime_name(settings.runtime)
        check_available(name)
        return name
    try:
        check_available("int8")
        return "int8"
    except RuntimeUnavailable:
        return "eager"


def _admin_db():
    from pixelchat.server.config import Settings
    from pixelchat.server.db import migrate, session_factory

    settings = Settings()
    migrate(settings.database)
    return session_factory(settings.database)()


@users_app.command("create")
def users_create(
    name: str = typer.Argument(..., help="The new user's name."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read a password from standard input."),
):
    """Create a server account."""
    from pixelchat.server.admin import create_user

    with user_errors():
        password = sys.stdin.readline().rstrip("\n") if password_stdin else None
        with _admin_db() as db:
            create_user(db, name, password)
    typer.echo(f"created user {name}")


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")):
    """List the server's accounts: name, created, password or not, active API keys, pictures, conversations."""
    from pixelchat.server.admin import list_users

    with user_errors():
        with _admin_db() as db:
            users = list_users(db)
    print_rows(users, as_json, lambda u: (u["name"], u["created"], "password" if u["password"] else "no password",
                                          f"{u['keys']} keys", f"{u['images']} pictures", f"{u['sessions']} conversations"))


def print_rows(rows: list[dict], as_json: bool, columns) -> None:
    """A listing: one JSON list, or a tab-separated line of ``columns(row)`` per row."""
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo("\t".join(columns(row)))


@users_app.command("delete")
def users_delete(
    name: str = typer.Argument(..., help="The user to delete."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Delete an account with its API keys, sign-ins, pictures (and the files no other account's picture
    shares), conversations, unfinished jobs with their uploads, ratings and votes."""
    from pixelchat.server.admin import delete_user, find_user, list_users
    from pixelchat.server.config import Settings
    from pixelchat.server.store import ImageStore

    with user_errors():
        with _admin_db() as db:
            find_user(db, name)  # an unknown user is said before anything is asked
            held = next(u for u in list_users(db) if u["name"] == name)
            if not yes:
                question = (f"delete user {name} with {held['keys']} active keys, {held['images']} pictures and "
                            f"{held['sessions']} conversations?")
                if not typer.confirm(question, default=False, err=True):
                    err.print("nothing deleted", highlight=False)
                    raise typer.Exit(1)
            settings = Settings()
            gone = delete_user(db, name, ImageStore(settings.store_url or settings.images_dir), settings.uploads_dir)
    shared = f" ({gone.shared_files} kept: another account's picture is the same file)" if gone.shared_files else ""
    typer.echo(f"deleted user {name}: {gone.pictures} pictures, {gone.sessions} conversations; removed "
               f"{gone.files} picture files{shared} and {gone.uploads} uploads")


@users_app.command("passwd")
def users_passwd(
    name: str = typer.Argument(..., help="Whose password."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from standard input."),
):
    """Set a user's password (asked twice, unless --password-stdin); signs out their browsers, keeps their API keys."""
    from pixelchat.server.admin import find_user, set_password

    with user_errors():
        with _admin_db() as db:
            find_user(db, name)  # an unknown user is said before any password is asked
            if password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = typer.prompt(f"new password for {name}", hide_input=True, confirmation_prompt=True, err=True)
            set_password(db, name, password)
    typer.echo(f"password of {name} changed; their browsers are signed out")


@keys_app.command("create")
def keys_create(
    user: str = typer.Argument(..., help="The user the key acts as."),
    key_name: str = typer.Option("default", "--name", help="A label for the key."),
    as_json: bool = typer.Option(False, "--json", help='Print {"key": ...}.'),
):
    """Create an API key; it is printed once and stored only as a hash."""
    from pixelchat.server.admin import create_key

    with user_errors():
        with _admin_db() as db:
            key = create_key(db, user, key_name)
    typer.echo(json.dumps({"key": key}) if as_json else key)


@keys_app.command("list")
def keys_list(
    user: str = typer.Argument(..., help="Whose keys."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
):
    """List a user's API keys: id, prefix, name, created, revoked (never the keys themselves)."""
    from pixelchat.server.admin import list_keys

    with user_errors():
        with _admin_db() as db:
            keys = [{"id": k.id, "name": k.name, "prefix": k.prefix, "created": k.created.isoformat(),
                     "revoked": k.revoked.isoformat() if k.revoked else None} for k in list_keys(db, user)]
    print_rows(keys, as_json, lambda k: (str(k["id"]), k["prefix"], k["name"], k["created"],
                                         "revoked " + k["revoked"] if k["revoked"] else "active"))


@keys_app.command("revoke")
def keys_revoke(
    user: str = typer.Argument(..., help="Whose key."),
    key: str = typer.Argument(..., metavar="KEY_ID_OR_PREFIX", help="The key's id or prefix (see 'keys list')."),
):
    """Revoke an API key: from then on it gets 401."""
    from pixelchat.server.admin import revoke_key

    with user_errors():
        with _admin_db() as db:
            row = revoke_key(db, user, key)
    typer.echo(f"revoked key {row.id} ({row.prefix}) of {user}")


# Start-up allocates millions of objects that live as long as the process (torch's modules, the model,
# the policy's patterns). The garbage collector would walk them again and again while they are made,
# and once more when the interpreter exits (together about 0.8 s of a 2 s `pixelchat generate`:
# RESULTS.md, "CLI start-up"). So it is off while a command starts, and what start-up made is frozen
# out of its reach (`gc.freeze`) when it comes back on after STARTUP_SECONDS, or when the command
# ends: what is left then is freed with the process.
STARTUP_SECONDS = 5.0


def _collect_again() -> None:
    import gc

    gc.freeze()
    gc.enable()


def main() -> None:
    import gc
    import threading

    gc.disable()
    timer = threading.Timer(STARTUP_SECONDS, _collect_again)
    timer.daemon = True
    timer.start()
    try:
        app(prog_name="pixelchat")
    finally:
        timer.cancel()
        _collect_again()


if __name__ == "__main__":
    sys.exit(main())
