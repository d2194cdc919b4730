"""``maskq faces IMAGE... [--json]``: print the faces found, for audits and evaluation.

Boxes are ``[x, y, w, h, score]`` in pixels of the EXIF-oriented image, i.e. of what
``maskq faceblur`` blurs. ``maskq.cli`` adds this subcommand with ``add_parser`` and hands the
parsed arguments to ``run``; exit codes are the CLI's (0 all read, 1 some failed, 3 no model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMAND = "faces"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from maskq.params import FACE_DEFAULT_THRESHOLD as DEFAULT_THRESHOLD

    p = sub.add_parser(COMMAND, help="print the faces found in images", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders or globs")
    p.add_argument("--json", action="store_true", help='one JSON object: {"<input>": [[x, y, w, h, score], ...]}')
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"detection score threshold (default: {DEFAULT_THRESHOLD})")
    p.add_argument("--detail", choices=["standard", "high"], default="standard",
                   help="high: look at big photos at full resolution for tiny faces (slower)")
    return p


def run(args: argparse.Namespace) -> int:
    from maskq import imaging
    from maskq.cli import expand_inputs
    from maskq.errors import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_SETUP,
        EXIT_USAGE,
        InvalidParameterError,
        MaskqError,
        ModelUnavailableError,
        first_error,
    )
    from maskq.faces.detector import PIXEL_BUDGETS, FaceDetector
    from maskq.params import FaceBlurParams
    from maskq.settings import load_settings

    try:
        FaceBlurParams.model_validate({"threshold": args.threshold})
    except ValueError as err:
        print(f"maskq: {InvalidParameterError.code}: threshold: {first_error(err.errors())[1]}", file=sys.stderr)
        return EXIT_USAGE
    inputs = list(dict.fromkeys(expand_inputs(args.inputs)))
    if not inputs:
        print("maskq: no input images found", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    try:
        detector = FaceDetector.load(settings.models_dir, settings.intra_op_threads)
    except ModelUnavailableError as err:
        print(f"maskq: {err.code}: {err.message}", file=sys.stderr)
        return EXIT_SETUP
    found: dict[str, list[list[float]]] = {}
    failures = 0
    for path in inputs:
        try:
            data = Path(path).read_bytes()
            image = imaging.decode(data, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes)
            faces = detector.detect(image.rgb, threshold=args.threshold, pixel_budget=PIXEL_BUDGETS[args.detail])
        except OSError as err:
            failures += 1
            print(f"{path}: {InvalidParameterError.code}: cannot read: {err.strerror}", file=sys.stderr)
            continue
        except MaskqError as err:
            failures += 1
            print(f"{path}: {err.code}: {err.message}", file=sys.stderr)
            continue
        found[str(path)] = [f.as_list() for f in faces]
        if not args.json:
            print(f"{path}: {len(faces)} face(s)")
            for f in faces:
                x, y, w, h, s = f.as_list()
                print(f"  x={x:g} y={y:g} w={w:g} h={h:g} score={s:.3f}")
    if args.json:
        json.dump(found, sys.stdout)
        sys.stdout.write("\n")
    return EXIT_FAILED if failures else EXIT_OK
