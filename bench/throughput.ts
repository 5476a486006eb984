/**
 * Throughput benchmark. Starts smtpstore from main.ts as a child process on
 * a fresh database and drives it with 1, 8 and 32 raw-socket clients. Each
 * client sends small messages over one session, pipelining MAIL, RCPT and
 * DATA (RFC 2920). Then, when Postfix's smtp-sink is installed, the same
 * load goes to smtp-sink, which stores nothing: the gap between the two is
 * the cost of the server and MySQL. Prints figures and asserts none.
 *
 *   deno task bench
 *
 * Variables: BENCH_CLIENTS (comma-separated client counts, default
 * 1,8,32), BENCH_MESSAGES (messages per client count, default 5000),
 * BENCH_SECONDS (time cap per client count, default 20).
 */

import {
  describeMysql,
  readProcessCpuSeconds,
  readProcessMemory,
  SmtpConnection,
  startServerProcess,
} from "./server_process.ts";

const MIB = 1024 * 1024;

function readNumbers(name: string, fallback: string): number[] {
  const text = Deno.env.get(name) || fallback;
  const numbers = text.split(",").map((part) => Number(part.trim()));
  if (numbers.some((value) => !Number.isInteger(value) || value < 1)) {
    throw new Error(
      `${name}=${JSON.stringify(text)} is invalid: ` +
        "expected whole numbers above 0, separated by commas",
    );
  }
  return numbers;
}

const CLIENT_COUNTS = readNumbers("BENCH_CLIENTS", "1,8,32");
const MESSAGES_PER_LEVEL = readNumbers("BENCH_MESSAGES", "5000")[0]!;
const SECONDS_PER_LEVEL = readNumbers("BENCH_SECONDS", "20")[0]!;
/** Messages sent before measuring, so that V8 has compiled the hot paths. */
const WARM_UP_MESSAGES = 200;

const ENVELOPE = "MAIL FROM:<bench@example.com>\r\n" +
  "RCPT TO:<sink@example.net>\r\nDATA\r\n";

/** Builds a message of about 4 KB: a few headers, 50 lines of 77 octets. */
function buildMessage(): Uint8Array {
  let text = "From: Bench <bench@example.com>\r\n" +
    "To: <sink@example.net>\r\n" +
    "Subject: throughput\r\n" +
    "Date: Thu, 04 Dec 2025 12:00:00 +0000\r\n" +
    "Message-ID: <bench@example.com>\r\n\r\n";
  for (let line = 0; line < 50; line++) {
    text += `${String(line).padStart(2, "0")} ${"lorem ipsum ".repeat(6)}\r\n`;
  }
  return new TextEncoder().encode(text + ".\r\n");
}

const MESSAGE = buildMessage();

interface LevelResult {
  readonly clients: number;
  readonly seconds: number;
  /** CPU time the server process used, in seconds. */
  readonly serverCpuSeconds: number;
  /** Milliseconds from MAIL to the 250 after the data, one per message. */
  readonly latencies: number[];
}

/** Runs one session: EHLO, then messages until `count` or the deadline. */
async function runClient(
  port: number,
  count: number,
  deadline: number,
  latencies: number[],
): Promise<void> {
  const smtp = await SmtpConnection.connect(port);
  try {
    await smtp.expect(220, "greeting");
    await smtp.write("EHLO client.bench.example\r\n");
    await smtp.expect(250, "EHLO");
    for (let sent = 0; sent < count && performance.now() < deadline; sent++) {
      const started = performance.now();
      await smtp.write(ENVELOPE);
      await smtp.expect(250, "MAIL");
      await smtp.expect(250, "RCPT");
      await smtp.expect(354, "DATA");
      await smtp.write(MESSAGE);
      await smtp.expect(250, "end of data");
      latencies.push(performance.now() - started);
    }
    await smtp.write("QUIT\r\n");
    await smtp.expect(221, "QUIT");
  } finally {
    smtp.close();
  }
}

async function runLevel(
  port: number,
  pid: number,
  clients: number,
  messages: number,
): Promise<LevelResult> {
  const perClient = Math.ceil(messages / clients);
  const cpuBefore = readProcessCpuSeconds(pid);
  const started = performance.now();
  const deadline = started + SECONDS_PER_LEVEL * 1000;
  const latencies: number[] = [];
  const sessions = Array.from(
    { length: clients },
    () => runClient(port, perClient, deadline, latencies),
  );
  await Promise.all(sessions);
  return {
    clients,
    seconds: (performance.now() - started) / 1000,
    serverCpuSeconds: readProcessCpuSeconds(pid) - cpuBefore,
    latencies,
  };
}

function percentile(sorted: readonly number[], fraction: number): number {
  const index = Math.min(
    sorted.length - 1,
    Math.ceil(fraction * sorted.length) - 1,
  );
  return sorted[Math.max(0, index)]!;
}

function formatRow(target: string, result: LevelResult, rss: number): string {
  const sorted = [...result.latencies].sort((a, b) => a - b);
  const count = sorted.length;
  const mean = sorted.reduce((sum, value) => sum + value, 0) / count;
  return [
    target.padEnd(10),
    String(result.clients).padStart(7),
    String(count).padStart(8),
    result.seconds.toFixed(2).padStart(7),
    (count / result.seconds).toFixed(0).padStart(7),
    mean.toFixed(2).padStart(8),
    percentile(sorted, 0.99).toFixed(2).padStart(7),
    (100 * result.serverCpuSeconds / result.seconds).toFixed(0).padStart(7),
    (rss / MIB).toFixed(1).padStart(8),
  ].join(" ");
}

const HEADER = "target     clients messages seconds   msg/s  mean ms " +
  " p99 ms  CPU %  RSS MiB";

/** Runs the warm-up, then each client count, printing one row each. */
async function measure(
  target: string,
  port: number,
  pid: number,
): Promise<number> {
  let sent = 0;
  const warmUp = await runLevel(port, pid, 1, WARM_UP_MESSAGES);
  sent += warmUp.latencies.length;
  for (const clients of CLIENT_COUNTS) {
    const result = await runLevel(port, pid, clients, MESSAGES_PER_LEVEL);
    sent += result.latencies.length;
    console.log(formatRow(target, result, readProcessMemory(pid, "VmRSS")));
  }
  const peak = readProcessMemory(pid, "VmHWM") / MIB;
  console.log(`${target.padEnd(10)} peak RSS ${peak.toFixed(1)} MiB`);
  return sent;
}

async function benchSmtpstore(): Promise<void> {
  const server = await startServerProcess();
  try {
    const sent = await measure("smtpstore", server.port, server.pid);
    const rows = await server.query("SELECT COUNT(*) AS count FROM messages");
    const stored = Number(rows[0]!.count);
    if (stored !== sent) {
      console.log(`warning: ${stored} rows stored for ${sent} messages`);
    }
    for (const line of server.problems) console.log(`server log: ${line}`);
  } finally {
    await server.stop();
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until something on `port` sends a 220 greeting. */
async function waitForGreeting(port: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const smtp = await SmtpConnection.connect(port);
      try {
        await smtp.expect(220, "greeting");
        await smtp.write("QUIT\r\n");
        await smtp.readReply();
        return;
      } finally {
        smtp.close();
      }
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

async function benchSmtpSink(): Promise<void> {
  const port = freePort();
  let child: Deno.ChildProcess;
  try {
    // -u is required when running as root; -m raises the 256-session cap.
    const args = ["-u", "nobody", "-m", "1024", `127.0.0.1:${port}`, "1024"];
    child = new Deno.Command("smtp-sink", {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.log("smtp-sink not found (Debian package postfix): skipped");
    return;
  }
  try {
    await waitForGreeting(port, 10_000);
    await measure("smtp-sink", port, child.pid);
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

async function main(): Promise<void> {
  console.log(
    `${new Date().toISOString()}, ${navigator.hardwareConcurrency} CPUs, ` +
      `Deno ${Deno.version.deno}, ${await describeMysql()}`,
  );
  console.log(
    `${MESSAGE.length - 3}-octet messages, ${MESSAGES_PER_LEVEL} per ` +
      `client count or ${SECONDS_PER_LEVEL} s, after ${WARM_UP_MESSAGES} ` +
      "to warm up; CPU % and RSS are the server process's (CPU over the " +
      "row's seconds, RSS after it)",
  );
  console.log(HEADER);
  await benchSmtpstore();
  await benchSmtpSink();
}

if (import.meta.main) await main();
