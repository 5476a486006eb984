import assert from "node:assert/strict";
import { log, setLogLevel } from "../src/log.ts";
import { captureLog } from "./helpers/log_capture.ts";

Deno.test("log writes time, level, session, event, fields", async () => {
  await captureLog(async (lines) => {
    setLogLevel("info");
    try {
      log("info", "stored", { id: 42, session: "7f3a9c", bytes: 5120 });
    } finally {
      setLogLevel("error");
    }
    assert.equal(lines.length, 1);
    assert.match(
      lines[0]!,
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z info session=7f3a9c event=stored id=42 bytes=5120$/,
    );
    await Promise.resolve();
  });
});

Deno.test("log quotes values that need it", async () => {
  await captureLog(async (lines) => {
    log("error", "failed", {
      plain: "ok",
      spaced: "two words",
      empty: "",
      quote: 'a"b',
      equals: "a=b",
      control: "a\nb",
      missing: undefined,
    });
    const fields = lines[0]!.split(" event=failed ")[1];
    assert.equal(
      fields,
      'plain=ok spaced="two words" empty="" quote="a\\"b" equals="a=b" ' +
        'control="a\\nb"',
    );
    await Promise.resolve();
  });
});

Deno.test("log drops lines below the level", async () => {
  await captureLog(async (lines) => {
    setLogLevel("warn");
    try {
      log("debug", "command", {});
      log("info", "session_start", {});
      log("warn", "idle_timeout", {});
      log("error", "handler_failed", {});
    } finally {
      setLogLevel("error");
    }
    assert.deepEqual(
      lines.map((line) => line.split(" ")[1]),
      ["warn", "error"],
    );
    await Promise.resolve();
  });
});
