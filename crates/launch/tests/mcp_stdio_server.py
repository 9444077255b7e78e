"""MCP server on the stdio transport for the MCP stdio bridge tests.

It uses the `mcp` package's MCPServer (called FastMCP before mcp 2) from
the test virtual environment that tests/python/venv.sh creates.

Usage: mcp_stdio_server.py
"""

import sys
import warnings

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

# mcp 2.3 marks logging and roots deprecated as of protocol revision
# 2026-07-28. The tools below use both on purpose, to send the bridge a
# notification and a request of the server.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

server = MCPServer("agyn-bridge-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Return the sum of two integers."""
    return a + b


@server.tool()
async def echo(text: str, ctx: Context) -> str:
    """Send a log notification, then return the text unchanged."""
    await ctx.info(f"echoing {len(text)} characters")
    return text


@server.tool()
async def list_roots(ctx: Context) -> str:
    """Ask the client for its roots and return the error text it gets."""
    try:
        result = await ctx.session.list_roots()
    except Exception as error:  # the bridge responds with a JSON-RPC error
        return f"error: {error}"
    return f"roots: {len(result.roots)}"


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait for the given number of seconds, then return "slept"."""
    await anyio.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    print("mcp_stdio_server: serving on stdio", file=sys.stderr, flush=True)
    server.run("stdio")
