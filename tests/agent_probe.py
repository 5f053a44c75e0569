"""An agent that probes the daemon from inside: it makes the calls it is given and records
what each one got, as a confused or prompt-injected agent would try them.

    agent_probe.py OUT CALLS_JSON

CALLS_JSON is a list of ``[method, params]`` or ``[method, params, name]``: a named
call's result is kept, and a later string param ``"$name"`` stands for its ``id``. OUT
gets a JSON list with, per call, ``{"ok": result}`` or ``{"error": code, "message": ...}``.
The token in the environment, if any, is dropped first: the daemon must know who this
is without it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from supervisord_agents.clients.client import Client
from supervisord_agents.errors import SupervisorError


def main() -> None:
    out, calls = sys.argv[1], json.loads(sys.argv[2])
    os.environ.pop("SUPERVISORD_AGENTS_TOKEN", None)
    results: list[dict[str, Any]] = []
    named: dict[str, Any] = {}
    for method, params, *name in calls:
        params = {k: named[v[1:]]["id"] if isinstance(v, str) and v[1:] in named else v for k, v in params.items()}
        try:
            with Client(timeout=30) as c:
                result = c.request(method, **params)
            results.append({"ok": result})
            if name:
                named[name[0]] = result
        except SupervisorError as e:
            results.append({"error": e.code.value, "message": e.message})
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
