"""Command-line interface: ``forgetscope COMMAND``. Each command module registers itself on ``app``."""

# Command modules: importing them registers their commands. Add one line per new command module.
from forgetscope.cli import (
    analyze_cmd,  # noqa: F401
    compare_cmd,  # noqa: F401
    forecast_cmd,  # noqa: F401
    import_cmd,  # noqa: F401
    import_lm_eval_cmd,  # noqa: F401
    info_cmd,  # noqa: F401
    measure_cmd,  # noqa: F401
    predict_cmd,  # noqa: F401
    replay_mix_cmd,  # noqa: F401
    report_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
    scaling_cmd,  # noqa: F401
    sharpness_cmd,  # noqa: F401
)
from forgetscope.cli.app import app, main, run_app

__all__ = ["app", "main", "run_app"]
