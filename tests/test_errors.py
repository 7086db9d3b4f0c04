from __future__ import annotations

import io
import sys

import pytest

from monai_gnerf.errors import GnerfInputError, first_line, input_errors_surface, report_interrupted


def test_first_line_skips_itk_source_locations_and_prefixes():
    itk_error = RuntimeError(
        "/work/ITK-source/ITK/Modules/IO/PNG/src/itkPNGImageIO.cxx:249:\n"
        "ITK ERROR: PNGImageIO(0x56247965b450): Error while reading file: x.png\n"
    )
    assert first_line(itk_error) == "Error while reading file: x.png"
    assert first_line(ValueError("first\nsecond")) == "first"
    assert first_line(KeyError()) == "KeyError"


def test_input_errors_surface_raises_the_cause_monai_wrapped():
    with pytest.raises(GnerfInputError, match="bad CT") as caught:
        with input_errors_surface():
            try:
                raise GnerfInputError("bad CT")
            except GnerfInputError as err:
                raise RuntimeError("applying transform LoadCTd") from err  # as monai.transforms does
    assert caught.value.__cause__ is None
    with pytest.raises(RuntimeError, match="not an input error"):
        with input_errors_surface():
            raise RuntimeError("not an input error")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_interrupted_line_starts_afresh_on_a_terminal_only(monkeypatch, capsys):
    """On a terminal the cursor stands after the echoed ^C (or a progress bar): the line starts
    on a new one; in a log or pipe it is the line alone."""
    report_interrupted()
    assert capsys.readouterr().err == "monai-gnerf: interrupted\n"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report_interrupted()
    assert terminal.getvalue() == "\nmonai-gnerf: interrupted\n"
