"""Write the HTTP API's OpenAPI 3 document, docs/openapi.json, from the route table.

    uv run --frozen python scripts/openapi.py          # regenerate docs/openapi.json
    uv run --frozen python scripts/openapi.py --check  # exit 1 if the shipped file is stale

The document covers the agent's routes (appliance/http/routes.py) and those the bundled
extensions mount (sd.http); appliance/http/openapi.py renders it. No agent is started.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance import __version__  # noqa: E402
from appliance.http.openapi import openapi  # noqa: E402
from appliance.http.routes import ROUTES  # noqa: E402
from sd.http import ROUTES as SD_ROUTES  # noqa: E402

SHIPPED = ROOT / "docs" / "openapi.json"


def render() -> str:
    return json.dumps(openapi((*ROUTES, *SD_ROUTES), version=__version__), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if SHIPPED.exists() and SHIPPED.read_text() == text:
            return 0
        print(f"{SHIPPED.relative_to(ROOT)} is stale: run python scripts/openapi.py", file=sys.stderr)
        return 1
    SHIPPED.write_text(text)
    print(f"wrote {SHIPPED.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
