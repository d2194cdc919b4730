"""``maskq``: run an operation over files, folders or globs with no servers at all.

    maskq remove photos/ -o cutouts/
    maskq swap shoes/*.jpg -o shop/ --canvas-width 2000 --canvas-height 2000 --scale 0.8 --logo logo.png

Every operation's options come from its parameter model, so the CLI, the worker and the API accept
the same parameters. Exit status: 0 every image succeeded, 1 some failed (one line each on stderr:
``<input>: <code>: <message>``), 2 bad usage or parameters, 3 the model or settings are unusable.
``--report FILE.json`` writes one row per input: output path, model, mask confidence, review flag,
timings, error.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from maskq import __version__
from maskq.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SETUP,
    EXIT_USAGE,
    ConfigurationError,
    InvalidParameterError,
    MaskqError,
    ModelUnavailableError,
)
from maskq.faces import cli as faces_cli
from maskq.local import up as up_cli
from maskq.params import PARAMS_MODELS, OperationParams, matte_model, matte_options, parse_params

SUFFIX_FORMATS = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".mpo"}
# Images handed to the network together by one worker thread: amortises the call, bounds memory.
CLI_BATCH = 4


def _option_type(annotation: Any) -> tuple[Any, list[str] | None, bool]:
    """(argparse type, choices, is_bool) from a pydantic field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _option_type(args[0])
    if origin is typing.Annotated:
        return _option_type(args[0])
    if origin is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)], False
    if annotation is bool:
        return None, None, True
    if annotation in (int, float):
        return annotation, None, False
    return str, None, False


def add_param_options(parser: argparse.ArgumentParser, model: type[OperationParams]) -> None:
    group = parser.add_argument_group(f"{parser.prog.split()[-1]} parameters")
    for name, info in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, choices, is_bool = _option_type(info.annotation)
        default = info.default if info.default is not None else None
        help_text = (info.description or "") + (f" (default: {default})" if default is not None else "")
        if is_bool:
            group.add_argument(
                flag, dest=f"p_{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            # choices are shown, not enforced by argparse: the parameter model checks them, so a
            # bad value (an unknown --model) gets the same invalid_parameter error as the API's
            group.add_argument(
                flag,
                dest=f"p_{name}",
                type=kind,
                default=None,
                metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"maskq {__version__}")
    sub = parser.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    for name, model in sorted(PARAMS_MODELS.items()):
        p = sub.add_parser(name, help=(model.__doc__ or "").strip().splitlines()[0], description=model.__doc__)
        p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
        p.add_argument("-o", "--output", required=True, type=Path, help="output folder (or file, for one input)")
        p.add_argument("--precision", choices=["fp32", "int8"],
                       help="the model file's precision (default: MASKQ_PRECISION or fp32)")
        p.add_argument("-j", "--jobs", type=int, default=0, help="images processed in parallel (default: CPU cores)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--report", type=Path, metavar="FILE.json",
                       help="write one row per input: output, model, confidence, review, timings, error")
        add_param_options(p, model)
    faces_cli.add_parser(sub)  # `maskq faces IMAGE... --json`: detections only, no output images
    up_cli.add_parser(sub)  # `maskq up`: the whole service on this machine until Ctrl-C
    return parser


def expand_inputs(inputs: Sequence[str]) -> Iterator[Path]:
    """Files as given, folders' images (sorted, not recursive), globs expanded (``**`` recurses)."""
    for raw in inputs:
        if any(ch in raw for ch in "*?["):
            matches = sorted(glob.glob(raw, recursive=True))
            yield from (Path(m) for m in matches if Path(m).is_file())
            continue
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path  # a missing file is reported as that image's failure


def output_paths(inputs: list[Path], output: Path) -> dict[Path, Path]:
    """Where each result goes: ``output`` itself for one input with a file suffix, else output/stem.ext
    (stems shared by two inputs keep their source suffix so that neither overwrites the other)."""
    if len(inputs) == 1 and output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir():
        return {inputs[0]: output}
    stems: dict[str, int] = {}
    for p in inputs:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: output / (f"{p.stem}{p.suffix.replace('.', '_')}" if stems[p.stem] > 1 else p.stem) for p in inputs}


def collect_params(args: argparse.Namespace) -> dict[str, Any]:
    return {k[2:]: v for k, v in vars(args).items() if k.startswith("p_") and v is not None}


def _read_assets(op_name: str, params: OperationParams) -> dict[str, bytes]:
    assets = {}
    for ref in params.asset_refs().values():
        try:
            assets[ref] = Path(ref).read_bytes()
        except OSError as err:
            raise InvalidParameterError(f"cannot read {ref}: {err.strerror}", field=ref) from None
    return assets


def _read(path: Path) -> bytes | MaskqError:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return InvalidParameterError("no such file", field="input")
    except IsADirectoryError:
        return InvalidParameterError("is a folder with no images", field="input")
    except OSError as err:
        return InvalidParameterError(f"cannot read: {err.strerror}", field="input")


def run(args: argparse.Namespace) -> int:
    from maskq.pipeline import Pipeline, WorkItem
    from maskq.settings import available_cpus, load_settings

    op_name = args.operation
    params_dict = collect_params(args)
    inputs = list(dict.fromkeys(expand_inputs(args.inputs)))
    single_file = len(inputs) == 1 and args.output.suffix.lower() in IMAGE_SUFFIXES and not args.output.is_dir()
    if single_file and "format" not in params_dict:
        # an output file's suffix says the format the user wants
        if args.output.suffix.lower() not in SUFFIX_FORMATS:
            print(
                f"maskq: invalid_parameter: cannot write {args.output.suffix} files; use .png, .webp or .jpg",
                file=sys.stderr,
            )
            return EXIT_USAGE
        params_dict["format"] = SUFFIX_FORMATS[args.output.suffix.lower()]
    try:
        params = parse_params(op_name, params_dict)
        assets = _read_assets(op_name, params)
    except InvalidParameterError as err:
        print(f"maskq: {err.code}: {err.message}", file=sys.stderr)
        return EXIT_USAGE
    if not inputs:
        print("maskq: no input images found", file=sys.stderr)
        return EXIT_USAGE
    jobs = args.jobs or min(len(inputs), available_cpus())
    overrides: dict[str, Any] = {"intra_op_threads": max(1, available_cpus() // max(1, jobs))}
    if args.precision:
        overrides["precision"] = args.precision
    try:
        settings = load_settings(**overrides)
        # an operation that needs no matte (face blur) never pays for loading a segmentation model
        if params.needs_matte():
            pipeline = Pipeline.load(settings, [matte_model(params) or settings.model])
        else:
            pipeline = Pipeline(settings)
    except (ModelUnavailableError, ConfigurationError) as err:
        print(f"maskq: {err.code}: {err.message}", file=sys.stderr)
        return EXIT_SETUP

    (args.output.parent if single_file else args.output).mkdir(parents=True, exist_ok=True)
    targets = output_paths(inputs, args.output)
    failures = 0
    rows: dict[Path, dict[str, Any]] = {}

    def work(chunk: list[Path]) -> list[tuple[Path, Any]]:
        raw = [(p, _read(p)) for p in chunk]
        ok = [(p, d) for p, d in raw if isinstance(d, bytes)]
        items = [WorkItem(d, op_name, params_dict, assets) for _, d in ok]
        outcomes = pipeline.process_many(items) if ok else []
        done = dict(zip((p for p, _ in ok), outcomes, strict=True))
        return [(p, done.get(p, d)) for p, d in raw]

    chunks = [inputs[i : i + CLI_BATCH] for i in range(0, len(inputs), CLI_BATCH)]
    from tqdm import tqdm

    with tqdm(total=len(inputs), unit="img", disable=args.quiet or len(inputs) < 2 or None, file=sys.stderr) as bar:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for future in as_completed([pool.submit(work, c) for c in chunks]):
                for path, outcome in future.result():
                    bar.update(1)
                    if isinstance(outcome, MaskqError):
                        failures += 1
                        bar.write(f"{path}: {outcome.code}: {outcome.message}", file=sys.stderr)
                        rows[path] = report_row(path, None, None, outcome)
                        continue
                    target = targets[path]
                    if not single_file:
                        target = target.with_name(f"{target.name}.{outcome.extension}")
                    target.write_bytes(outcome.data)
                    rows[path] = report_row(path, target, outcome, None)
    flagged = sum(1 for r in rows.values() if r["review"])
    if flagged:
        print(f"maskq: {flagged} of {len(inputs)} results marked for review (mask confidence below "
              f"{params_review_below(params, settings.review_below)})", file=sys.stderr)
    if args.report:
        write_report(args.report, op_name, [rows[p] for p in inputs if p in rows])
    return EXIT_FAILED if failures else EXIT_OK


def params_review_below(params: OperationParams, default: float) -> float:
    options = matte_options(params)
    return options.review_below if options is not None and options.review_below is not None else default


def report_row(path: Path, output: Path | None, result: Any, error: MaskqError | None) -> dict[str, Any]:
    """One input's line of the ``--report`` file."""
    return {
        "input": str(path),
        "output": str(output) if output is not None else None,
        "model": getattr(result, "model", None),
        "confidence": getattr(result, "confidence", None),
        "review": getattr(result, "review", None),
        "timings": {k: round(v, 4) for k, v in result.timings.items()} if result is not None else {},
        "error": {"code": error.code, "message": error.message} if error is not None else None,
    }


def write_report(path: Path, operation: str, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"operation": operation, "images": len(rows), "failed": sum(1 for r in rows if r["error"]),
           "review": sum(1 for r in rows if r["review"]), "rows": rows}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.operation == faces_cli.COMMAND:
            return faces_cli.run(args)
        if args.operation == up_cli.COMMAND:
            return up_cli.run(args)
        return run(args)
    except KeyboardInterrupt:
        print("maskq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
