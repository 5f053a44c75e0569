"""An agent that uses the supervisor's MCP tools from inside, as Claude Code would: it starts
``agents-mcp`` with its own environment over stdio (the official SDK client) and calls the
tools it is given.

    mcp_probe.py OUT CALLS_JSON

CALLS_JSON is a list of ``[tool, arguments]``; OUT gets, per call, ``{"ok": structured
result}`` (its text, for a tool that returns no structured content) or ``{"error": text}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def run(calls: list[list[Any]]) -> list[dict[str, Any]]:
    shim = str(Path(sys.executable).with_name("agents-mcp"))
    results: list[dict[str, Any]] = []
    params = StdioServerParameters(command=shim, env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for tool, arguments in calls:
            result = await session.call_tool(tool, arguments)
            if result.is_error:
                results.append({"error": " ".join(getattr(c, "text", "") for c in result.content)})
            else:
                text = " ".join(getattr(c, "text", "") for c in result.content)
                results.append({"ok": result.structured_content if result.structured_content is not None else text})
    return results


def main() -> None:
    out, calls = sys.argv[1], json.loads(sys.argv[2])
    results = anyio.run(run, calls, backend="trio")
    Path(out + ".tmp").write_text(json.dumps(results))
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
