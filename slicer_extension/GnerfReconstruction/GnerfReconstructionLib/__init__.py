# ruff: noqa: N999 - Slicer names a scripted module's library <ModuleName>Lib
"""Qt-free library of the GnerfReconstruction Slicer module: parameters, process runner, MRML logic."""
