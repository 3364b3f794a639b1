"""`forgetscope info`: versions and where the default model lives, for bug reports."""

from __future__ import annotations

import platform

from forgetscope.cli.app import app, console


@app.command()
def info() -> None:
    """Print versions of forgetscope and its main dependencies."""
    import torch
    import transformers

    import forgetscope

    console.print(f"forgetscope {forgetscope.__version__}")
    console.print(f"python {platform.python_version()}, torch {torch.__version__}, "
                  f"transformers {transformers.__version__}")
    console.print(f"cuda available: {torch.cuda.is_available()}")
