"""MCP client over streamable HTTP for the MCP stdio bridge tests.

It connects with the `mcp` package's Client to the URL in argv[1], lists
the tools, calls `add` with 2 and 3, and prints one JSON object with the
tool names and the call's text content.

Usage: mcp_http_client.py URL
"""

import json
import sys

import anyio
from mcp import Client


async def main(url: str) -> None:
    async with Client(url) as client:
        tools = await client.list_tools()
        result = await client.call_tool("add", {"a": 2, "b": 3})
        print(
            json.dumps(
                {
                    "tools": sorted(tool.name for tool in tools.tools),
                    "text": [part.text for part in result.content if part.type == "text"],
                    "is_error": result.is_error,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
