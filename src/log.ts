/**
 * The one log function: one line per event on stderr, as
 * `2026-08-01T09:30:12Z info session=7f3a9c event=stored id=42 bytes=5120`.
 */

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = typeof LOG_LEVELS[number];

export type LogFields = Record<
  string,
  string | number | bigint | boolean | null | undefined
>;

/** A destination for finished log lines; tests swap it to read them. */
export type LogSink = (line: string) => void;

const encoder = new TextEncoder();

function writeToStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr is closed or full; a log line is not worth stopping for.
  }
}

let minimumLevel: LogLevel = "info";
let sink: LogSink = writeToStderr;

/** Sets the lowest level that is written. */
export function setLogLevel(level: LogLevel): void {
  minimumLevel = level;
}

/** Replaces where lines go, and returns the previous sink. */
export function setLogSink(next: LogSink): LogSink {
  const previous = sink;
  sink = next;
  return previous;
}

/** Reports whether lines of this level are written now. */
export function isLogged(level: LogLevel): boolean {
  return LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(minimumLevel);
}

/** Quotes a value when it contains a space, a quote, `=` or a control character. */
function formatValue(value: string): string {
  // deno-lint-ignore no-control-regex -- control characters must be quoted
  if (value !== "" && !/[\s"=\\\x00-\x1f\x7f]/.test(value)) return value;
  return JSON.stringify(value);
}

/**
 * Writes one event. A `session` field, when present, comes first; fields
 * whose value is undefined are left out.
 */
export function log(
  level: LogLevel,
  event: string,
  fields: LogFields = {},
): void {
  if (!isLogged(level)) return;

  const time = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
  const parts = [time, level];
  const { session, ...rest } = fields;
  if (session !== undefined) {
    parts.push(`session=${formatValue(String(session))}`);
  }
  parts.push(`event=${formatValue(event)}`);
  for (const [key, value] of Object.entries(rest)) {
    if (value === undefined) continue;
    parts.push(`${key}=${formatValue(String(value))}`);
  }
  sink(parts.join(" "));
}

/** Formats a caught error for the `error=` field, with its stack at debug. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return code === undefined ? error.message : `${code}: ${error.message}`;
  }
  return String(error);
}
