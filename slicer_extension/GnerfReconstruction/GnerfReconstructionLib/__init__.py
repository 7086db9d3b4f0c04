# ruff: noqa: N999 - Slicer names a scripted module's library <ModuleName>Lib
"""Qt-free library of the GnerfReconstruction Slicer module, one concern a module.

``parameters`` the panel's choices, ``install`` install locations and dependencies, ``geometry`` the
acquisition geometry, ``nodes`` MRML nodes to files and back, ``process`` a separate process,
``job`` a run's state machine, ``logic`` the planner of a run's bundle processes.
"""
