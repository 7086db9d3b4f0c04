"""The ``monai-gnerf`` command line (python-fire).

Run ``monai-gnerf --help`` or ``monai-gnerf COMMAND --help`` for the options of each command;
they are the jobs' arguments and their config dataclasses' fields (:mod:`monai_gnerf.apps.options`).
User errors (missing files, bad geometry, invalid volumes, a bad or unknown option) print one
line and exit with status 2; Ctrl-C exits with status 130 and leaves no partial output.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any

import fire

from monai_gnerf.apps.drr import simulate_drrs
from monai_gnerf.apps.generative import single_view_reconstruction, train_prior_workflow
from monai_gnerf.apps.options import check_option_names, command
from monai_gnerf.apps.demo import demo as main_demo
from monai_gnerf.apps.sparse_view import reconstruct_folder
from monai_gnerf.config import path_text
from monai_gnerf.errors import GnerfInputError, report_interrupted
from monai_gnerf.geometry import list_presets, load_geometry
from monai_gnerf.metrics import evaluate_test_set
from monai_gnerf.resources import set_threads

__all__ = ["Commands", "main"]


def _report_drr(out_dir: Path, _: dict[str, Any]) -> None:
    print(f"wrote DRRs to {out_dir}")


def _report_reconstruction(result: Any, arguments: dict[str, Any]) -> None:
    out = arguments["out"]
    print(f"wrote {out} ({result.iterations} iterations, {result.seconds:.0f} s)")


def _report_demo(summary: dict[str, Any], arguments: dict[str, Any]) -> None:
    for name, values in summary["metrics"].items():
        print(f"{name:5s} 3D PSNR {values['psnr_3d']:.2f} dB  SSIM {values['ssim_3d']:.3f}  ({values['seconds']:.0f} s)")
    for name, path in summary["outputs"].items():
        print(f"{name:8s} {path}")
    print(f"metrics  {Path(arguments['out']) / 'metrics.json'}")
    if "single_view" in summary:
        single = summary["single_view"]
        print(f"single view (one PA DRR, shipped prior): 71 unseen views {single['psnr_2d_unseen_views']:.2f} dB "
              f"(copy-the-input baseline {single['psnr_2d_copy_input_baseline']:.2f} dB), "
              f"volume 3D PSNR {single['psnr_3d']:.2f} dB")  # fmt: skip
        print(f"figure   {single['figure']}")


def _report_path(path: Path, _: dict[str, Any]) -> None:
    print(f"wrote {path}")


def _report_single_view(summary: dict[str, Any], arguments: dict[str, Any]) -> None:
    out = arguments["out"]
    print(f"angle {summary['angle_deg']:.1f} deg; wrote {out}/views, {out}/views.gif, {out}/volume.nii.gz")


_SIGPIPE_STATUS = 141  # what a shell reports for a program ended by SIGPIPE (128 + 13)


class Commands:
    """monai-gnerf: X-ray simulation and reconstruction with neural radiance fields."""

    drr = staticmethod(command(simulate_drrs, _report_drr))
    reconstruct = staticmethod(command(reconstruct_folder, _report_reconstruction))
    demo = staticmethod(command(main_demo, _report_demo))
    train_prior = staticmethod(command(train_prior_workflow, _report_path))
    single_view = staticmethod(command(single_view_reconstruction, _report_single_view))

    def presets(self) -> None:
        """List the geometry presets (usable wherever a --geometry is asked for)."""
        for name in list_presets():
            geometry = load_geometry(name)
            print(f"{name:16s} {geometry.description}")

    def geometry(self, name: str) -> None:
        """Print a geometry preset (or a geometry JSON file) as JSON, ready to edit and pass back.

        Args:
            name: preset name (see `monai-gnerf presets`) or path of a geometry JSON file.
        """
        print(load_geometry(name).to_json())

    def evaluate(
        self,
        out: str | None = None,
        reconstructions: str | None = None,
        references: str | None = None,
        projections: str | None = None,
        reference_projections: str | None = None,
    ) -> None:
        """Score reconstructions against reference CTs and/or projection sets against reference ones.

        3D: PSNR and SSIM of each volume (HU clipped at air, min-max normalized with the
        reference's range, data range 1); 2D: PSNR, SSIM and GMSD per view the same way. Writes
        OUT/metrics_3d.csv, OUT/metrics_2d.csv and OUT/metrics.json, as `bundle/configs/evaluate.json`.

        Args:
            out: output folder (required).
            reconstructions: a reconstruction (NIfTI/NRRD, HU) or a folder of them; needs references.
            references: the reference CT or a folder of CTs (cases matched by name).
            projections: a projection folder or a folder of them; needs reference_projections.
            reference_projections: the reference projection folder or a folder of them.
        """
        if out is None:
            raise GnerfInputError("evaluate needs --out DIR, the folder for the metric files.")
        paths = {"out": out, "reconstructions": reconstructions, "references": references, "projections": projections,
                 "reference_projections": reference_projections}  # fmt: skip
        summary = evaluate_test_set(*(path_text(name, value) for name, value in paths.items()))
        for kind in ("volumes", "projections"):
            if kind in summary:
                means = ", ".join(f"{name} {value:.4f}" for name, value in summary[kind]["mean"].items())
                print(f"{kind}: {len(summary[kind]['cases'])} case(s), mean {means}")
        print(f"wrote {summary['outputs']['metrics_json']}")


def _command_names() -> list[str]:
    return sorted(name.replace("_", "-") for name in vars(Commands) if not name.startswith("_"))


def _check_options(argv: list[str]) -> None:
    """Unknown commands and options are refused before anything runs (fire would run a job first)."""
    if not argv or argv[0].startswith("-"):
        return
    name = argv[0].replace("-", "_")
    if name.startswith("_") or name not in vars(Commands):
        raise GnerfInputError(f"unknown command {argv[0]!r}; commands: {', '.join(_command_names())}.")
    job = getattr(Commands, name)
    check_option_names(job, argv[1:])
    if not isinstance(vars(Commands)[name], staticmethod):  # a plain method: every option takes a value
        _check_arguments(argv[0], job, argv[1:])


def _check_arguments(name: str, method: Any, argv: list[str]) -> None:
    """Too few or too many arguments to a plain command are one line, not fire's usage text."""
    if "--help" in argv or "-h" in argv:
        return
    parameters = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
    required = [p.name.upper() for p in parameters if p.default is inspect.Parameter.empty]
    given, tokens = [], iter(argv)
    for token in tokens:
        if token.startswith("-"):
            if "=" not in token:
                next(tokens, None)  # the option's value
            continue
        given.append(token)
    if len(given) < len(required):
        raise GnerfInputError(f"{name} needs {', '.join(required)}.")
    if len(given) > len(parameters):
        extra = ", ".join(repr(t) for t in given[len(parameters):])
        allowed = {0: "no arguments", 1: "one argument"}.get(len(parameters), f"{len(parameters)} arguments")
        raise GnerfInputError(f"{name} takes {allowed}; remove {extra}.")


def _pop_threads(args: list[str]) -> tuple[int | None, list[str]]:
    """The global ``--threads N`` (or ``--threads=N``) option, and the other arguments."""
    rest, threads = [], None
    tokens = iter(args)
    for token in tokens:
        if token == "--threads" or token.startswith("--threads="):
            value = token.partition("=")[2] if "=" in token else next(tokens, "")
            if not value.isdigit():
                raise GnerfInputError(f"--threads must be an integer >= 1, got {value!r}.")
            threads = int(value)
        else:
            rest.append(token)
    return threads, rest


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs :class:`Commands` and turns user errors into one-line messages.

    ``--threads N`` (any command) sets torch's intra-op threads; the default is the CPUs this
    process may use (affinity mask and cgroup quota, :func:`monai_gnerf.resources.available_cpus`).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nibabel.global").propagate = False  # nibabel prints its header repairs itself: once
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        threads, args = _pop_threads(args)
        set_threads(threads)
        _check_options(args)
        fire.Fire(Commands(), command=args, name="monai-gnerf")
    except GnerfInputError as err:
        print(f"monai-gnerf: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        report_interrupted()
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (`monai-gnerf presets | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        sys.exit(_SIGPIPE_STATUS)


if __name__ == "__main__":
    main()
