"""The network-namespace lab of the partition tests: the product's own
(``fastraft.tools.pacelc.netns``, which the PACELC lab builds on), re-exported under the name the
tests have always used."""

from fastraft.tools.pacelc.netns import (  # noqa: F401
    PREFIX,
    SUBNET,
    Faults,
    Host,
    Lab,
    LabError,
    available,
    scratch_dir,
    sweep,
)
