"""Command-line interface: ``forgetscope COMMAND``. Each command module registers itself on ``app``."""

from forgetscope.cli.app import app, main, run_app

# Command modules: importing them registers their commands. Add one line per new command module.
from forgetscope.cli import info_cmd  # noqa: F401,E402
from forgetscope.cli import analyze_cmd  # noqa: F401,E402
from forgetscope.cli import import_cmd  # noqa: F401,E402
from forgetscope.cli import predict_cmd  # noqa: F401,E402
from forgetscope.cli import run_cmd  # noqa: F401,E402
from forgetscope.cli import report_cmd  # noqa: F401,E402
from forgetscope.cli import scaling_cmd  # noqa: F401,E402
from forgetscope.cli import sharpness_cmd  # noqa: F401,E402
from forgetscope.cli import compare_cmd  # noqa: F401,E402

__all__ = ["app", "main", "run_app"]
