// Starts `agyn serve` for end-to-end tests: free loopback ports, a fresh
// data directory, and the bootstrap admin token that the server writes there.

import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const repositoryRoot = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../..",
);

const startTimeoutMs = 30_000;
const stopTimeoutMs = 10_000;
const pollIntervalMs = 100;
const maxLogChars = 64 * 1024;

export interface AgynServer {
  /** Origin of the public listener, such as `http://127.0.0.1:40123`. */
  readonly origin: string;
  /** Origin of the same listener over TLS, such as `https://127.0.0.1:40123`. */
  readonly tlsOrigin: string;
  /** Plaintext API token of the bootstrap admin, read from `admin-token`. */
  readonly adminToken: string;
  /** PEM certificate of the platform CA, read from `ca.crt`. */
  readonly caPem: string;
  /** Stops the server and deletes its data directory. */
  stop(): Promise<void>;
}

/**
 * Starts the binary at `$AGYN_BIN` (default `target/debug/agyn`, relative to
 * the repository root) and resolves once the public listener accepts
 * connections and `admin-token` is readable. Rejects with the server log if the process
 * exits or is not ready within 30 seconds.
 */
export async function startServer(): Promise<AgynServer> {
  const binary = path.resolve(
    repositoryRoot,
    process.env.AGYN_BIN ?? "target/debug/agyn",
  );
  const dataDir = await mkdtemp(path.join(tmpdir(), "agyn-e2e-"));
  const [port, internalPort] = await findFreePorts(2);

  // An inherited AGYN_DATABASE_URL would point the server at another
  // database than the fresh one in dataDir.
  const env = { ...process.env };
  delete env.AGYN_DATABASE_URL;

  const child = spawn(
    binary,
    [
      "serve",
      "--data-dir",
      dataDir,
      "--listen",
      `127.0.0.1:${port}`,
      "--internal-listen",
      `127.0.0.1:${internalPort}`,
    ],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );

  let log = "";
  const appendLog = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-maxLogChars);
  };
  child.stdout.on("data", appendLog);
  child.stderr.on("data", appendLog);

  let spawnError: Error | undefined;
  child.on("error", (err) => {
    spawnError = err;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && spawnError === undefined) {
      child.kill("SIGTERM");
      const stopped = await Promise.race([
        exited.then(() => true),
        // An unreferenced timer does not keep the test process alive once
        // the server has exited.
        sleep(stopTimeoutMs, undefined, { ref: false }).then(() => false),
      ]);
      if (!stopped) {
        child.kill("SIGKILL");
        await exited;
      }
    }
    await rm(dataDir, { recursive: true, force: true });
  };

  const deadline = Date.now() + startTimeoutMs;
  const tokenPath = path.join(dataDir, "admin-token");
  for (;;) {
    if (spawnError !== undefined || child.exitCode !== null || child.signalCode !== null) {
      await stop();
      const reason = spawnError?.message ?? `exit code ${child.exitCode}, signal ${child.signalCode}`;
      throw new Error(
        `agyn serve (${binary}) failed to start: ${reason}. ` +
          `Build it with \`cargo build -p agyn\` or set AGYN_BIN. Server log:\n${log}`,
      );
    }
    // The server writes admin-token before it opens the public listener, so
    // the file is complete once a connection succeeds.
    if (await acceptsConnections(port)) {
      const adminToken = await readAdminToken(tokenPath);
      if (adminToken !== undefined) {
        const caPem = await readFile(path.join(dataDir, "ca.crt"), "utf8");
        return {
          origin: `http://127.0.0.1:${port}`,
          tlsOrigin: `https://127.0.0.1:${port}`,
          adminToken,
          caPem,
          stop,
        };
      }
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `agyn serve was not ready on 127.0.0.1:${port} within ${startTimeoutMs} ms. Server log:\n${log}`,
      );
    }
    await sleep(pollIntervalMs);
  }
}

/**
 * Reserves `count` distinct free loopback ports. The ports are released
 * before the server binds them, so another process could take one in
 * between, which makes the server fail to start with an address-in-use error.
 */
async function findFreePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve());
      });
      const address = server.address();
      assertPortAddress(address);
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}

function assertPortAddress(
  address: ReturnType<Server["address"]>,
): asserts address is { address: string; family: string; port: number } {
  if (address === null || typeof address === "string") {
    throw new Error(`expected a TCP address, got ${String(address)}`);
  }
}

/** Returns the trimmed token, or undefined while the file is missing or empty. */
async function readAdminToken(tokenPath: string): Promise<string | undefined> {
  try {
    const token = (await readFile(tokenPath, "utf8")).trim();
    return token === "" ? undefined : token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      return undefined;
    }
    throw err;
  }
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => {
      socket.destroy();
      resolve(false);
    });
  });
}
