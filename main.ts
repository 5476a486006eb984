/**
 * smtpstore: an SMTP server that stores every message it receives in MySQL.
 * This entry point reads the configuration and dispatches subcommands.
 */

import {
  type Config,
  CONFIG_VARIABLES,
  ConfigError,
  loadConfig,
} from "./src/config.ts";
import { describeError, log, setLogLevel } from "./src/log.ts";
import { describeTarget, parseMysqlUrl } from "./src/mysql_url.ts";
import { SmtpServer } from "./src/server.ts";
import { type MysqlStore, openStore } from "./src/store.ts";

const VERSION = "0.1.0";

const USAGE =
  `smtpstore ${VERSION}: an SMTP server that stores every message in MySQL

Usage:
  smtpstore [serve]    run the SMTP server (the default)
  smtpstore schema     create the database and apply the schema, then exit
  smtpstore help       show this help
  smtpstore version    show the version

Environment variables (make start also reads them from .env; with Deno,
deno task --env-file=.env start):
${
    CONFIG_VARIABLES.map(([name, meaning, fallback]) =>
      `  ${name.padEnd(27)} ${meaning}\n  ${"".padEnd(27)} default: ${fallback}`
    ).join("\n")
  }

Exit status: 0 after a clean stop, 1 when the server cannot start (MySQL
out of reach, port in use), 2 for an invalid variable or argument.
`;

function fail(message: string, status: number): never {
  console.error(`smtpstore: ${message}`);
  Deno.exit(status);
}

function readConfig(): Config {
  try {
    return loadConfig(Deno.env.toObject());
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message, 2);
    throw error;
  }
}

/** Room for the Return-Path: and Received: headers prepended to a message. */
const TRACE_HEADER_ALLOWANCE = 4096;

async function connectStore(config: Config): Promise<MysqlStore> {
  let store: MysqlStore;
  try {
    store = await openStore(config.mysqlUrl);
  } catch (error) {
    fail(`${describeError(error)} (check MYSQL_URL and that MySQL runs)`, 1);
  }
  // A message that MySQL cannot take in one packet would be refused after
  // the client sent it all, so the mismatch stops the server at start.
  const needed = config.maxMessageBytes + TRACE_HEADER_ALLOWANCE;
  if (needed > store.maxRawBytes) {
    await store.close();
    fail(
      `MAX_MESSAGE_BYTES=${config.maxMessageBytes} does not fit MySQL's ` +
        `max_allowed_packet=${store.maxAllowedPacket} with room for headers; ` +
        `raise max_allowed_packet to at least ${needed + 1024} or lower ` +
        "MAX_MESSAGE_BYTES",
      1,
    );
  }
  return store;
}

async function applySchema(): Promise<void> {
  const config = readConfig();
  setLogLevel(config.logLevel);
  const store = await connectStore(config);
  await store.close();
  console.log(
    `smtpstore: schema applied to ${
      new URL(config.mysqlUrl).pathname.slice(1)
    }`,
  );
}

async function serve(): Promise<void> {
  const config = readConfig();
  setLogLevel(config.logLevel);
  const store = await connectStore(config);

  const server = new SmtpServer(config, store);
  let address: Deno.NetAddr;
  try {
    address = server.listen();
  } catch (error) {
    await store.close();
    fail(
      `cannot listen on ${config.smtpHost}:${config.smtpPort}: ${
        describeError(error)
      }`,
      1,
    );
  }
  log("info", "server_start", {
    host: address.hostname,
    port: address.port,
    hostname: config.hostname,
    mysql: describeTarget(parseMysqlUrl(config.mysqlUrl)),
    version: VERSION,
  });

  let stoppingSince: number | undefined;
  const stop = async (signal: Deno.Signal) => {
    if (stoppingSince !== undefined) {
      // Ctrl-C reaches the server twice under deno task, from the terminal
      // and forwarded by the task runner, so only a signal a second or more
      // after the first stops at once. MySQL rolls back what has not
      // committed.
      if (Date.now() - stoppingSince < 1000) return;
      log("warn", "server_forced_stop", { signal });
      Deno.exit(1);
    }
    stoppingSince = Date.now();
    log("info", "server_stopping", {
      signal,
      sessions: server.connectionCount,
      grace_seconds: config.shutdownGraceMs / 1000,
    });
    await server.shutdown(config.shutdownGraceMs);
    await store.close();
    log("info", "server_stop", {});
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

async function main(args: string[]): Promise<void> {
  const [command = "serve", ...rest] = args;
  if (rest.length > 0) {
    fail(
      `unexpected argument ${JSON.stringify(rest[0])}; see smtpstore help`,
      2,
    );
  }
  switch (command) {
    case "serve":
      return await serve();
    case "schema":
      return await applySchema();
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return;
    case "version":
    case "--version":
      console.log(VERSION);
      return;
    default:
      fail(`unknown command ${JSON.stringify(command)}; see smtpstore help`, 2);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    // Run through `deno run` without -A, the first environment or network
    // access fails, so print how to run it rather than a stack trace.
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    fail(
      `${error.message.split("\n")[0]}; run it with deno task start or ` +
        "deno run -A main.ts",
      2,
    );
  }
}
