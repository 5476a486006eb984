/** Reading the server's log lines in tests. */

import { setLogSink } from "../../src/log.ts";

/** Collects log lines while the test runs, and restores the sink after. */
export async function captureLog(
  test: (lines: string[]) => Promise<void>,
): Promise<void> {
  const lines: string[] = [];
  const previous = setLogSink((line) => lines.push(line));
  try {
    await test(lines);
  } finally {
    setLogSink(previous);
  }
}
