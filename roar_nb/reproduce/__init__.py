"""Reproducing an artifact, split by concern.

* `plan`: the minimal sub-DAG that produced it, its sources and recorded environment
  (`make_plan` reads only the store; `check` looks for the sources on disk and at this
  interpreter's packages; neither runs or writes anything);
* `execute`: re-run the plan under tracing, hash the outputs, verdicts, the stored record;
* `provision`: `--in DIR`, a fresh clone and a venv holding exactly the recorded packages.

Rendering a plan as a bash script or a notebook is `roar_nb.export`. No printing in
any of them: the front ends render `Plan` and `Outcome`. The names below are the
use case the front ends call.
"""

from roar_nb.reproduce.execute import (  # noqa: F401
    DIFFERS,
    IDENTICAL,
    MISSING,
    NONDETERMINISTIC,
    Outcome,
    RunOptions,
    Verdict,
    run,
)
from roar_nb.reproduce.plan import (  # noqa: F401
    UNKNOWN,
    Plan,
    Source,
    check,
    make_plan,
    requirements,
    updated_in_place,
)
