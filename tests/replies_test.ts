import assert from "node:assert/strict";
import { formatReply, REPLIES } from "../src/replies.ts";

Deno.test("formatReply writes one line with CRLF", () => {
  assert.equal(formatReply(REPLIES.ok, false), "250 OK\r\n");
  assert.equal(formatReply(REPLIES.ok, true), "250 2.0.0 OK\r\n");
});

Deno.test("formatReply marks all but the last line", () => {
  const text = formatReply(REPLIES.groupMembers(["<a@x>", "<b@x>"]), true);
  assert.equal(text, "250-2.1.5 <a@x>\r\n250 2.1.5 <b@x>\r\n");
});

Deno.test("formatReply adds no enhanced code where none exists", () => {
  assert.equal(
    formatReply(REPLIES.startData, true),
    "354 End data with <CR><LF>.<CR><LF>\r\n",
  );
  const ehlo = formatReply(REPLIES.ehlo("mx", "c", ["PIPELINING"]), true);
  assert.equal(ehlo, "250-mx greets c\r\n250 PIPELINING\r\n");
});

Deno.test("formatReply sends only printable ASCII", () => {
  const text = formatReply(REPLIES.userFound("Zoë\r\n<z@x>"), true);
  assert.equal(text, "250 2.1.5 Zo???<z@x>\r\n");
});

Deno.test("every reply has a code and known enhanced code", () => {
  for (const [name, entry] of Object.entries(REPLIES)) {
    const reply = typeof entry === "function"
      ? (entry as (...values: string[]) => typeof REPLIES.ok)("x", "y", "z")
      : entry;
    assert.ok(reply.code >= 200, name);
    assert.ok(reply.code < 600, name);
    if (reply.enhancedStatusCode !== undefined) {
      const [first] = reply.enhancedStatusCode.split(".");
      assert.equal(first, String(reply.code)[0], name);
    }
  }
});
