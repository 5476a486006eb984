/**
 * Idle-session memory benchmark. Starts smtpstore from main.ts as a child
 * process with MAX_CONNECTIONS=1100, opens 1,000 sessions that send EHLO
 * and then nothing, and prints the server's RSS before, with the sessions
 * open, and after they close. Prints figures and asserts none.
 *
 *   deno task bench:idle
 *
 * Variables: BENCH_SESSIONS (default 1000).
 */

import {
  readProcessMemory,
  type ServerProcess,
  SmtpConnection,
  startServerProcess,
} from "./server_process.ts";

const MIB = 1024 * 1024;
const SESSIONS = Number(Deno.env.get("BENCH_SESSIONS") || "1000");
/** Sessions opened at the same time. */
const OPENING_BATCH = 50;
/** Time to open all sessions before the run gives up. */
const OPEN_TIMEOUT_MS = 60_000;
/** Time the server gets to settle before each RSS reading. */
const SETTLE_MS = 1000;

if (!Number.isInteger(SESSIONS) || SESSIONS < 1 || SESSIONS > 10_000) {
  throw new Error(
    `BENCH_SESSIONS=${Deno.env.get("BENCH_SESSIONS")} is invalid: ` +
      "expected a whole number from 1 to 10000",
  );
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/** Connects, reads the greeting, and sends EHLO; the session stays open. */
async function openIdleSession(port: number): Promise<SmtpConnection> {
  const smtp = await SmtpConnection.connect(port);
  try {
    await smtp.expect(220, "greeting");
    await smtp.write("EHLO idle.bench.example\r\n");
    await smtp.expect(250, "EHLO");
    return smtp;
  } catch (error) {
    smtp.close();
    throw error;
  }
}

async function openSessions(
  server: ServerProcess,
  sessions: SmtpConnection[],
): Promise<void> {
  const deadline = Date.now() + OPEN_TIMEOUT_MS;
  while (sessions.length < SESSIONS) {
    if (Date.now() > deadline) {
      throw new Error(
        `opened ${sessions.length} of ${SESSIONS} sessions ` +
          `in ${OPEN_TIMEOUT_MS / 1000} s`,
      );
    }
    const count = Math.min(OPENING_BATCH, SESSIONS - sessions.length);
    const batch = Array.from(
      { length: count },
      () => openIdleSession(server.port),
    );
    sessions.push(...await Promise.all(batch));
  }
}

function rssMib(pid: number): string {
  return (readProcessMemory(pid, "VmRSS") / MIB).toFixed(1);
}

async function main(): Promise<void> {
  const server = await startServerProcess({
    MAX_CONNECTIONS: String(SESSIONS + 100),
  });
  const sessions: SmtpConnection[] = [];
  try {
    console.log(
      `${new Date().toISOString()}, ${navigator.hardwareConcurrency} CPUs, ` +
        `Deno ${Deno.version.deno}, ${SESSIONS} idle sessions (EHLO, then ` +
        "nothing); RSS of the server process",
    );
    // One session first, so that the figure before includes what the
    // first session loads once (compiled code, the pool's first use).
    (await openIdleSession(server.port)).close();
    await delay(SETTLE_MS);
    const before = readProcessMemory(server.pid, "VmRSS");
    console.log(`before:           ${rssMib(server.pid)} MiB`);

    const started = Date.now();
    await openSessions(server, sessions);
    const openedIn = Date.now() - started;
    await delay(SETTLE_MS);
    const open = readProcessMemory(server.pid, "VmRSS");
    const perSession = (open - before) / SESSIONS / 1024;
    console.log(
      `${SESSIONS} open:        ${rssMib(server.pid)} MiB ` +
        `(opened in ${openedIn} ms)`,
    );
    console.log(`per session:      ${perSession.toFixed(1)} KiB`);

    for (const session of sessions.splice(0)) session.close();
    await delay(SETTLE_MS);
    console.log(`after close:      ${rssMib(server.pid)} MiB`);
    const peak = readProcessMemory(server.pid, "VmHWM") / MIB;
    console.log(`peak:             ${peak.toFixed(1)} MiB`);
    for (const line of server.problems) console.log(`server log: ${line}`);
  } finally {
    for (const session of sessions) session.close();
    await server.stop();
  }
}

if (import.meta.main) await main();
