"""``python -m harness``: the ``./inv`` program (:mod:`harness.program`)."""

from harness.program import main

main()
