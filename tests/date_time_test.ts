import assert from "node:assert/strict";
import { formatDateTime, parseDateTime } from "../src/date_time.ts";

Deno.test("formatDateTime writes RFC 5322 in +0000", () => {
  const date = new Date(Date.UTC(2024, 0, 1, 9, 30, 5));
  assert.equal(formatDateTime(date), "Mon, 01 Jan 2024 09:30:05 +0000");
});

Deno.test("parseDateTime reads what formatDateTime writes", () => {
  const date = new Date(Date.UTC(2026, 11, 4, 23, 59, 59));
  assert.equal(parseDateTime(formatDateTime(date))?.getTime(), date.getTime());
});

/** [Date header value, expected ISO time, or null]. */
const CASES: [string, string | null][] = [
  ["Mon, 1 Jan 2024 10:00:00 +0200", "2024-01-01T08:00:00.000Z"],
  ["1 Jan 2024 10:00 -0500", "2024-01-01T15:00:00.000Z"],
  ["Mon, 1 Jan 2024 10:00:00 GMT", "2024-01-01T10:00:00.000Z"],
  ["Mon, 1 Jan 2024 10:00:00 EST", "2024-01-01T15:00:00.000Z"],
  ["Mon, 1 Jan 2024 10:00:00", "2024-01-01T10:00:00.000Z"],
  ["Mon, 1 Jan 99 10:00:00 +0000", "1999-01-01T10:00:00.000Z"],
  ["Mon, 1 Jan 2024 10:00:00 +0000 (UTC)", "2024-01-01T10:00:00.000Z"],
  ["Fri, 30 Feb 2024 10:00:00 +0000", null],
  ["Mon, 1 Jan 2024 25:00:00 +0000", null],
  ["yesterday", null],
  ["", null],
];

Deno.test("parseDateTime reads RFC 5322 dates in UTC", async (t) => {
  for (const [value, expected] of CASES) {
    await t.step(JSON.stringify(value), () => {
      assert.equal(parseDateTime(value)?.toISOString() ?? null, expected);
    });
  }
});
