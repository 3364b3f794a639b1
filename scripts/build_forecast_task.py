"""Write configs/forecast_task_http_status.jsonl: a task the demo sweep does not contain.

Prompt/response pairs built from the Python standard library's ``http.HTTPStatus`` table (status code,
reason phrase and description), so the file is reproducible offline and carries no third-party text::

    python scripts/build_forecast_task.py
    forgetscope forecast sweeps/demo --task configs/forecast_task_http_status.jsonl --probe 30 --verify
"""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path

OUT = Path(__file__).parents[1] / "configs" / "forecast_task_http_status.jsonl"


def rows() -> list[dict[str, str]]:
    out = []
    for status in HTTPStatus:
        detail = f"{status.value} {status.phrase}" + (f": {status.description}." if status.description else ".")
        out.append({"id": f"http-{status.value}", "prompt": f"What does HTTP status code {status.value} mean?",
                    "response": detail})
    return out


if __name__ == "__main__":
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    print(f"wrote {OUT} ({len(rows())} examples)")
