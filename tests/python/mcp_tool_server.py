"""MCP server with a few tools for the agent tests (crates/agent/tests).

It serves streamable HTTP at http://127.0.0.1:<port>/mcp with the `mcp`
package's MCPServer (called FastMCP before mcp 2).

Usage: mcp_tool_server.py PORT
"""

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("agyn-test-tools")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> str:
    """Return the sum of two integers as text."""
    return str(a + b)


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait for the given number of seconds, then return "slept"."""
    await anyio.sleep(seconds)
    return "slept"


@server.tool()
def fail(message: str) -> str:
    """Report a tool error with the given message."""
    raise ToolError(message)


if __name__ == "__main__":
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        streamable_http_path="/mcp",
    )
