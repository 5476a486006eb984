/**
 * Helpers the benchmarks share: smtpstore started from main.ts as a child
 * process on a fresh MySQL database, its memory and CPU time read from
 * /proc (so Linux only), and a raw SMTP client connection.
 */

import mysql from "mysql2/promise";

const PROJECT_ROOT = new URL("..", import.meta.url).pathname;
const DEFAULT_SERVER_URL = "mysql://root@127.0.0.1:3306/";
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

/** A child process of main.ts serving SMTP on 127.0.0.1. */
export interface ServerProcess {
  readonly pid: number;
  readonly port: number;
  /** Name of the database created for this run. */
  readonly database: string;
  /** The server's stderr lines at warn or error level, at most 20. */
  readonly problems: readonly string[];
  /** Queries the benchmark database on a connection of its own. */
  query(sql: string): Promise<Record<string, unknown>[]>;
  /** Stops the server with SIGTERM and drops the database. */
  stop(): Promise<void>;
}

/** Returns `MYSQL_URL` (or the default) without its database name. */
function mysqlServerUrl(): URL {
  const url = new URL(Deno.env.get("MYSQL_URL") || DEFAULT_SERVER_URL);
  url.pathname = "/";
  return url;
}

async function connectMysql(database?: string): Promise<mysql.Connection> {
  const url = mysqlServerUrl();
  return await mysql.createConnection({
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port === "" ? 3306 : Number(url.port),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database,
  });
}

async function dropDatabase(name: string): Promise<void> {
  const connection = await connectMysql();
  try {
    await connection.query(`DROP DATABASE IF EXISTS \`${name}\``);
  } finally {
    await connection.end();
  }
}

/**
 * Reads the server's stderr line by line. Resolves `port` from the
 * `server_start` line, and keeps warn and error lines.
 */
async function watchLog(
  stderr: ReadableStream<Uint8Array>,
  onPort: (port: number) => void,
  problems: string[],
  tail: string[],
): Promise<void> {
  let pending = "";
  for await (const text of stderr.pipeThrough(new TextDecoderStream())) {
    pending += text;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      const port = /event=server_start .*\bport=(\d+)/.exec(line)?.[1];
      if (port !== undefined) onPort(Number(port));
      if (/^\S+ (warn|error) /.test(line) && problems.length < 20) {
        problems.push(line);
      }
    }
  }
}

/**
 * Starts `deno run main.ts` with SMTP_PORT=0 on a new database named
 * `smtpstore_bench_` and random hex digits. `env` adds or overrides
 * variables, such as MAX_CONNECTIONS.
 */
export async function startServerProcess(
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const database = "smtpstore_bench_" +
    crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  const url = mysqlServerUrl();
  url.pathname = "/" + database;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      "main.ts",
    ],
    cwd: PROJECT_ROOT,
    env: {
      SMTP_HOST: "127.0.0.1",
      SMTP_PORT: "0",
      SMTP_HOSTNAME: "bench.example",
      MYSQL_URL: url.href,
      ...env,
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  const problems: string[] = [];
  const tail: string[] = [];
  let resolvePort = (_port: number) => {};
  const portKnown = new Promise<number>((resolve) => resolvePort = resolve);
  const logging = watchLog(child.stderr, resolvePort, problems, tail);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), START_TIMEOUT_MS);
  });
  const first = await Promise.race([portKnown, child.status, timeout]);
  clearTimeout(timer);
  if (typeof first !== "number") {
    if (first === "timeout") child.kill("SIGKILL");
    await child.status;
    await logging;
    await dropDatabase(database);
    throw new Error(
      `smtpstore did not start: ${
        first === "timeout" ? "timed out" : `exit code ${first.code}`
      }\n${tail.join("\n")}`,
    );
  }

  return {
    pid: child.pid,
    port: first,
    database,
    problems,
    async query(sql) {
      const connection = await connectMysql(database);
      try {
        const [rows] = await connection.query(sql);
        return rows as Record<string, unknown>[];
      } finally {
        await connection.end();
      }
    },
    async stop() {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await child.status;
      clearTimeout(killer);
      await logging;
      await dropDatabase(database);
    },
  };
}

/**
 * Reads a `Vm...` field of /proc/<pid>/status, in bytes: `VmRSS` is the
 * resident set size now, `VmHWM` its peak.
 */
export function readProcessMemory(
  pid: number,
  field: "VmRSS" | "VmHWM",
): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kilobytes = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (kilobytes === null) {
    throw new Error(`/proc/${pid}/status has no ${field} line`);
  }
  return Number(kilobytes[1]) * 1024;
}

/** Clock ticks a second in /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU time a process has used so far, user and system, in seconds. */
export function readProcessCpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The fields after the command name, which is in parentheses, start at
  // field 3 (state); utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / CLOCK_TICKS_PER_SECOND;
}

/** Describes MySQL as the benchmark's output needs it. */
export async function describeMysql(): Promise<string> {
  const connection = await connectMysql();
  try {
    const [rows] = await connection.query(
      "SELECT VERSION() AS version, " +
        "@@innodb_flush_log_at_trx_commit AS flush",
    );
    const row = (rows as { version: string; flush: number }[])[0]!;
    return `MySQL ${row.version}, innodb_flush_log_at_trx_commit=${row.flush}`;
  } finally {
    await connection.end();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A raw SMTP client connection that reads replies by their last line. */
export class SmtpConnection {
  readonly #conn: Deno.TcpConn;
  readonly #buffer = new Uint8Array(64 * 1024);
  #text = "";

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<SmtpConnection> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new SmtpConnection(conn);
  }

  async write(data: string | Uint8Array): Promise<void> {
    let bytes = typeof data === "string" ? encoder.encode(data) : data;
    while (bytes.length > 0) {
      bytes = bytes.subarray(await this.#conn.write(bytes));
    }
  }

  /** Reads one reply, multi-line or not, and returns its code. */
  async readReply(): Promise<number> {
    while (true) {
      const end = this.#text.indexOf("\r\n");
      if (end < 0) {
        const count = await this.#conn.read(this.#buffer);
        if (count === null) throw new Error("the server closed the connection");
        this.#text += decoder.decode(this.#buffer.subarray(0, count));
        continue;
      }
      const line = this.#text.slice(0, end);
      this.#text = this.#text.slice(end + 2);
      if (line[3] === " ") return Number(line.slice(0, 3));
    }
  }

  /** Reads one reply and throws unless its code is `expected`. */
  async expect(expected: number, step: string): Promise<void> {
    const code = await this.readReply();
    if (code !== expected) {
      throw new Error(`${step}: expected ${expected}, got ${code}`);
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // The server closed it first.
    }
  }
}
