/** Server configuration, read once from environment variables. */

import { LOG_LEVELS, type LogLevel } from "./log.ts";
import {
  InvalidMysqlUrlError,
  parseMysqlUrl,
  redactPassword,
} from "./mysql_url.ts";

/** The settings of one server, each already parsed and in its unit. */
export interface Config {
  readonly smtpHost: string;
  readonly smtpPort: number;
  /** Name in the greeting and in the `Received:` header. */
  readonly hostname: string;
  readonly mysqlUrl: string;
  readonly maxMessageBytes: number;
  /** Message bytes that all sessions together may hold in memory. */
  readonly maxBufferedMessageBytes: number;
  readonly maxRecipients: number;
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  /** How long a message in DATA may take to finish after SIGTERM or SIGINT. */
  readonly shutdownGraceMs: number;
  readonly tlsCertFile: string | undefined;
  readonly tlsKeyFile: string | undefined;
  readonly logLevel: LogLevel;
}

/** A missing or invalid variable; the message names the variable and value. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export const DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/smtpstore";

/** Each variable with its meaning and default, for `smtpstore help`. */
export const CONFIG_VARIABLES = [
  ["SMTP_HOST", "listening address", "0.0.0.0"],
  ["SMTP_PORT", "listening port", "2525"],
  [
    "SMTP_HOSTNAME",
    "name in the greeting and Received: header",
    "the machine's hostname",
  ],
  ["MYSQL_URL", "mysql://user:password@host:port/database", DEFAULT_MYSQL_URL],
  ["MAX_MESSAGE_BYTES", "largest message accepted, in bytes", "10485760"],
  [
    "MAX_BUFFERED_MESSAGE_BYTES",
    "message bytes in memory (>= MAX_MESSAGE_BYTES)",
    "268435456",
  ],
  ["MAX_RECIPIENTS", "recipients per message", "100"],
  ["MAX_CONNECTIONS", "concurrent sessions", "1000"],
  [
    "IDLE_TIMEOUT_SECONDS",
    "wait for a command, and for one message's data",
    "600",
  ],
  ["SHUTDOWN_GRACE_SECONDS", "wait for DATA on SIGTERM or SIGINT", "30"],
  ["TLS_CERT_FILE", "PEM certificate, not used yet (no STARTTLS)", "unset"],
  ["TLS_KEY_FILE", "PEM private key, not used yet", "unset"],
  ["LOG_LEVEL", "debug, info, warn or error", "info"],
] as const;

type Environment = Record<string, string | undefined>;

function readInteger(
  env: Environment,
  name: string,
  fallback: number,
  minimum: number,
  maximum: number,
): number {
  const text = env[name];
  if (text === undefined || text === "") return fallback;
  const value = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!(value >= minimum && value <= maximum)) {
    throw new ConfigError(
      `${name}=${JSON.stringify(text)} is invalid: ` +
        `expected a whole number from ${minimum} to ${maximum}`,
    );
  }
  return value;
}

/**
 * Reads the listening address: an IPv4 or IPv6 address, or a host name
 * that the system resolves when the server binds.
 */
function readListenHost(env: Environment): string {
  const text = env.SMTP_HOST;
  if (text === undefined || text === "") return "0.0.0.0";
  const labels = text.split(".");
  const isName = labels.every((label) => /^[A-Za-z0-9-]{1,63}$/.test(label));
  const isIpv4 = labels.length === 4 &&
    labels.every((label) => /^\d{1,3}$/.test(label) && Number(label) <= 255);
  const isAllDigits = labels.every((label) => /^\d+$/.test(label));
  const isIpv6 = text.includes(":") && /^[0-9A-Fa-f:.]+$/.test(text);
  if (isIpv6 || isIpv4 || (isName && !isAllDigits)) return text;
  throw new ConfigError(
    `SMTP_HOST=${JSON.stringify(text)} is invalid: expected an IP address ` +
      "or a host name",
  );
}

function readHostname(env: Environment): string {
  const text = env.SMTP_HOSTNAME;
  const hostname = text === undefined || text === "" ? Deno.hostname() : text;
  // The name goes into every greeting and Received: header, so it must be
  // one printable ASCII word.
  if (!/^[\x21-\x7e]+$/.test(hostname)) {
    throw new ConfigError(
      `SMTP_HOSTNAME=${
        JSON.stringify(hostname)
      } is invalid: expected a domain name`,
    );
  }
  return hostname;
}

function readMysqlUrl(env: Environment): string {
  const text = env.MYSQL_URL;
  if (text === undefined || text === "") return DEFAULT_MYSQL_URL;
  try {
    parseMysqlUrl(text);
  } catch (error) {
    if (!(error instanceof InvalidMysqlUrlError)) throw error;
    const shown = JSON.stringify(redactPassword(text));
    throw new ConfigError(`MYSQL_URL=${shown} is invalid: ${error.reason}`);
  }
  return text;
}

function readLogLevel(env: Environment): LogLevel {
  const text = env.LOG_LEVEL;
  if (text === undefined || text === "") return "info";
  const level = LOG_LEVELS.find((name) => name === text.toLowerCase());
  if (level === undefined) {
    throw new ConfigError(
      `LOG_LEVEL=${JSON.stringify(text)} is invalid: expected one of ${
        LOG_LEVELS.join(", ")
      }`,
    );
  }
  return level;
}

function readTlsFiles(
  env: Environment,
): [string | undefined, string | undefined] {
  const cert = env.TLS_CERT_FILE || undefined;
  const key = env.TLS_KEY_FILE || undefined;
  if ((cert === undefined) !== (key === undefined)) {
    const missing = cert === undefined ? "TLS_CERT_FILE" : "TLS_KEY_FILE";
    throw new ConfigError(
      `${missing} is missing: TLS_CERT_FILE and TLS_KEY_FILE are set together`,
    );
  }
  return [cert, key];
}

/** Parses the configuration, throwing ConfigError on the first bad value. */
export function loadConfig(env: Environment): Config {
  const [tlsCertFile, tlsKeyFile] = readTlsFiles(env);
  const maxMessageBytes = readInteger(
    env,
    "MAX_MESSAGE_BYTES",
    10 * 1024 * 1024,
    1,
    1024 * 1024 * 1024,
  );
  const maxBufferedMessageBytes = readInteger(
    env,
    "MAX_BUFFERED_MESSAGE_BYTES",
    Math.max(256 * 1024 * 1024, maxMessageBytes),
    1,
    Number.MAX_SAFE_INTEGER,
  );
  // One message of the largest size must fit in the shared budget.
  if (maxBufferedMessageBytes < maxMessageBytes) {
    throw new ConfigError(
      `MAX_BUFFERED_MESSAGE_BYTES=${maxBufferedMessageBytes} is invalid: ` +
        `expected at least MAX_MESSAGE_BYTES (${maxMessageBytes})`,
    );
  }
  return {
    smtpHost: readListenHost(env),
    smtpPort: readInteger(env, "SMTP_PORT", 2525, 0, 65535),
    hostname: readHostname(env),
    mysqlUrl: readMysqlUrl(env),
    maxMessageBytes,
    maxBufferedMessageBytes,
    maxRecipients: readInteger(env, "MAX_RECIPIENTS", 100, 1, 100_000),
    maxConnections: readInteger(env, "MAX_CONNECTIONS", 1000, 1, 1_000_000),
    idleTimeoutMs: readInteger(env, "IDLE_TIMEOUT_SECONDS", 600, 1, 86_400) *
      1000,
    shutdownGraceMs: readInteger(env, "SHUTDOWN_GRACE_SECONDS", 30, 0, 3600) *
      1000,
    tlsCertFile,
    tlsKeyFile,
    logLevel: readLogLevel(env),
  };
}
