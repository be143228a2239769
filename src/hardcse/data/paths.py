"""Where hardcse looks for its data.

The data directory has the layout of the project's shared data (and of SentEval's
``data/downstream``, one level down)::

    <data dir>/
      senteval/STS/STS12-en-test/ ... STS16-en-test/, STS/STSBenchmark/
      senteval/SICK/
      corpus/wiki1m_for_simcse.txt

It is chosen, in this order, by the ``--data-dir`` option (the ``data_dir`` argument), the
``HARDCSE_DATA`` environment variable, and the default ``~/.cache/hardcse/data``.
``hardcse download`` fills it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the data directory.
DATA_ENV = "HARDCSE_DATA"

#: The documented default data directory.
DEFAULT_DATA_DIR = Path("~/.cache/hardcse/data")


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the data directory: ``data_dir``, else ``$HARDCSE_DATA``, else ``~/.cache/hardcse/data``.

    The path is user-expanded (``~``) but not required to exist: ``hardcse download`` creates
    it, and the loaders report missing files themselves. A path that names a file, or that the file
    system cannot hold, is refused in one sentence.
    """
    from hardcse.safety import check_directory_option

    if data_dir is not None and str(data_dir) != "":
        return check_directory_option(data_dir, "--data-dir")
    env = os.environ.get(DATA_ENV)
    if env:
        return check_directory_option(env, f"${DATA_ENV}")
    return check_directory_option(DEFAULT_DATA_DIR, "the data directory")
