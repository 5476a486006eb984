/**
 * smtpstore run as its own process (`deno run -A main.ts`), for tests of
 * signals and exit codes:
 *
 * ```ts
 * const server = await startServerProcess({ MYSQL_URL: db.url });
 * // ... connect to server.port, then server.signal("SIGTERM") ...
 * const status = await server.exited();
 * ```
 */

const MAIN = new URL("../../main.ts", import.meta.url);

/** A running server process and the log lines it has written so far. */
export interface ServerProcess {
  readonly port: number;
  /** Every stderr line so far, without its line end. */
  readonly lines: readonly string[];
  /** Resolves with the first line, old or new, that matches the pattern. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  signal(signal: Deno.Signal): void;
  /** Resolves with the exit status once stderr is read to its end. */
  exited(): Promise<Deno.CommandStatus>;
  /** Kills the process when it still runs, and waits for it. */
  close(): Promise<void>;
}

/** Returns a loopback port that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Starts the server on a free loopback port with `env` added to the
 * environment, and resolves once it has logged `event=server_start`.
 */
export async function startServerProcess(
  env: Record<string, string>,
  timeoutMs = 20_000,
): Promise<ServerProcess> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN.pathname],
    cwd: new URL("../../", import.meta.url).pathname,
    env: { SMTP_HOST: "127.0.0.1", SMTP_PORT: String(port), ...env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const reading = readLines(child.stderr, (line) => {
    lines.push(line);
    for (const wake of waiters) wake();
  });
  let running = true;
  const status = child.status.then(async (status) => {
    running = false;
    await reading;
    for (const wake of waiters) wake();
    return status;
  });

  const waitForLine = async (pattern: RegExp, timeout = timeoutMs) => {
    const deadline = Date.now() + timeout;
    while (true) {
      const line = lines.find((line) => pattern.test(line));
      if (line !== undefined) return line;
      if (!running) {
        throw new Error(
          `server exited without a line matching ${pattern}:\n` +
            lines.join("\n"),
        );
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(
          `timed out waiting for a line matching ${pattern}:\n` +
            lines.join("\n"),
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(wake, remaining);
        function wake() {
          clearTimeout(timer);
          waiters.delete(wake);
          resolve();
        }
        waiters.add(wake);
      });
    }
  };

  const server: ServerProcess = {
    port,
    lines,
    waitForLine,
    signal: (signal) => child.kill(signal),
    exited: () => status,
    close: async () => {
      if (running) {
        try {
          child.kill("SIGKILL");
        } catch {
          // It exited meanwhile.
        }
      }
      await status;
    },
  };
  try {
    await waitForLine(/ event=server_start /);
  } catch (error) {
    await server.close();
    throw error;
  }
  return server;
}

async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let end: number;
    while ((end = pending.indexOf("\n")) >= 0) {
      onLine(pending.slice(0, end));
      pending = pending.slice(end + 1);
    }
  }
  if (pending !== "") onLine(pending);
}
